//! The rules' glob patterns and their matching. The input is `pattern NUL value`. Asserts,
//! against a reference written here: our parse splits the pattern into the same literal pieces
//! (`\*` and `\\` unescaped, `*` separating); a match exists exactly when a backtracking
//! reference matcher finds one; the captures, put back between the pieces, give the value
//! again; a pattern with no `*` matches only its own (unescaped) text; an exact pattern made from
//! any value matches only that value.
#![no_main]

use evs_token_vending::fuzzing;
use libfuzzer_sys::fuzz_target;

/// The literal pieces between unescaped stars, or `None` for a pattern the syntax refuses.
fn reference_pieces(pattern: &str) -> Option<Vec<String>> {
    if pattern.is_empty() {
        return None;
    }
    let mut pieces = vec![String::new()];
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('*' | '\\')) => pieces.last_mut().unwrap().push(e),
                _ => return None,
            },
            '*' => {
                if chars.peek() == Some(&'*') {
                    return None;
                }
                pieces.push(String::new());
            }
            other => pieces.last_mut().unwrap().push(other),
        }
    }
    (pieces.len() <= 10).then_some(pieces)
}

/// Whether `value` is `pieces` joined by any texts (exhaustive search, small inputs only).
fn reference_matches(pieces: &[String], value: &str) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return value.is_empty();
    };
    let Some(after) = value.strip_prefix(first.as_str()) else {
        return false;
    };
    if rest.is_empty() {
        return after.is_empty();
    }
    after
        .char_indices()
        .map(|(i, _)| i)
        .chain([after.len()])
        .any(|skip| reference_matches(rest, &after[skip..]))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, value) = text.split_once('\0').unwrap_or((text, text));
    assert!(fuzzing::glob_exact_matches(value, value));
    assert_eq!(
        fuzzing::glob_exact_matches(pattern, value),
        pattern == value
    );
    let ours = fuzzing::glob(pattern, value);
    let pieces = reference_pieces(pattern);
    assert_eq!(
        ours.is_some(),
        pieces.is_some(),
        "parse disagrees on {pattern:?}"
    );
    let (Some(ours), Some(pieces)) = (ours, pieces) else {
        return;
    };
    if value.len() <= 48 {
        assert_eq!(
            ours.is_some(),
            reference_matches(&pieces, value),
            "{pattern:?} on {value:?}"
        );
    }
    if pieces.len() == 1 {
        assert_eq!(
            ours.is_some(),
            value == pieces[0],
            "{pattern:?} on {value:?}"
        );
    }
    if let Some(captures) = ours {
        assert_eq!(captures.len(), pieces.len() - 1);
        let mut rebuilt = pieces[0].clone();
        for (capture, piece) in captures.iter().zip(&pieces[1..]) {
            rebuilt.push_str(capture);
            rebuilt.push_str(piece);
        }
        assert_eq!(
            rebuilt, value,
            "captures of {pattern:?} do not rebuild the value"
        );
    }
});
