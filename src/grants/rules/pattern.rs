//! Anchored globs with captures, and the database-name templates that use the captures.
//!
//! A pattern is text in which `*` stands for any run of characters (`\*` is a literal star,
//! `\\` a literal backslash); without a `*` it is an exact value. It must match the whole
//! value. Each `*` is a capture, numbered from 1, and takes as little text as it can, left to
//! right, so `db-*-*` on `db-orders-eu-writer` captures `orders` and `eu-writer`. Matching is
//! one pass over the value per literal piece: no backtracking, no regex engine, no allocation.

/// At most this many `*` per pattern (captures `{1}` … `{9}`).
pub const MAX_CAPTURES: usize = 9;

/// The longest database name a capture may produce.
pub const MAX_DATABASE_NAME: usize = 128;

/// A compiled pattern: the literal pieces between its stars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// `stars + 1` pieces; an exact value is one piece.
    pieces: Vec<String>,
}

/// The texts the stars of a pattern took, by capture number minus one.
#[derive(Debug, Clone, Copy)]
pub struct Captures<'v> {
    taken: [&'v str; MAX_CAPTURES],
    count: usize,
}

impl<'v> Captures<'v> {
    /// The text of capture `number` (1-based), if the pattern has that many stars.
    pub fn get(&self, number: usize) -> Option<&'v str> {
        (1..=self.count)
            .contains(&number)
            .then(|| self.taken[number - 1])
    }
}

/// Why a rule's `match` pattern or a database-name template is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// An empty pattern.
    #[error("an empty pattern matches nothing; write the value or `*`")]
    Empty,
    /// `\` before anything but `*` or `\`.
    #[error("`\\` must be followed by `*` or `\\`")]
    BadEscape,
    /// `**`.
    #[error("`**` is ambiguous: which star would take the text?")]
    DoubleStar,
    /// More stars than captures are kept.
    #[error("at most {MAX_CAPTURES} `*` per pattern")]
    TooManyStars,
    /// A template's `{n}` beyond the pattern's stars.
    #[error("`{{{number}}}` names a capture the pattern does not have (it has {stars} `*`)")]
    UnknownCapture {
        /// The placeholder's number.
        number: usize,
        /// The pattern's stars.
        stars: usize,
    },
}

impl Pattern {
    /// Parses `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut pieces = vec![String::new()];
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped @ ('*' | '\\')) => push(&mut pieces, escaped),
                    _ => return Err(PatternError::BadEscape),
                },
                '*' => {
                    if chars.peek() == Some(&'*') {
                        return Err(PatternError::DoubleStar);
                    }
                    pieces.push(String::new());
                }
                other => push(&mut pieces, other),
            }
        }
        if pieces.len() - 1 > MAX_CAPTURES {
            return Err(PatternError::TooManyStars);
        }
        Ok(Self { pieces })
    }

    /// A pattern that matches `value` only, whatever characters it has.
    pub fn exact(value: &str) -> Self {
        Self {
            pieces: vec![value.to_owned()],
        }
    }

    /// The literal text every match starts with.
    pub fn prefix(&self) -> &str {
        self.pieces.first().map_or("", String::as_str)
    }

    /// How many captures a match yields.
    pub fn stars(&self) -> usize {
        self.pieces.len() - 1
    }

    /// Whether `value` matches, with what each star took.
    pub fn captures<'v>(&self, value: &'v str) -> Option<Captures<'v>> {
        let mut captures = Captures {
            taken: [""; MAX_CAPTURES],
            count: self.stars(),
        };
        let (first, rest) = self.pieces.split_first()?;
        if rest.is_empty() {
            return (value == first).then_some(captures);
        }
        let (last, middle) = rest.split_last()?;
        let inner = value.strip_prefix(first.as_str())?;
        // Stripped from what the prefix left, so the two never overlap.
        let mut inner = inner.strip_suffix(last.as_str())?;
        for (star, piece) in middle.iter().enumerate() {
            let at = inner.find(piece.as_str())?;
            captures.taken[star] = &inner[..at];
            inner = &inner[at + piece.len()..];
        }
        captures.taken[middle.len()] = inner;
        Some(captures)
    }
}

fn push(pieces: &mut [String], c: char) {
    if let Some(last) = pieces.last_mut() {
        last.push(c);
    }
}

/// A database name with `{N}` placeholders for captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate {
    parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Text(String),
    Capture(usize),
}

impl NameTemplate {
    /// Parses `text`, whose placeholders must name captures `pattern` has.
    pub fn parse(text: &str, stars: usize) -> Result<Self, PatternError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let close = after.find('}');
            let number = close.and_then(|close| after[..close].parse::<usize>().ok());
            match (close, number) {
                (Some(close), Some(number)) => {
                    if number == 0 || number > stars {
                        return Err(PatternError::UnknownCapture { number, stars });
                    }
                    parts.push(TemplatePart::Text(rest[..open].to_owned()));
                    parts.push(TemplatePart::Capture(number));
                    rest = &after[close + 1..];
                }
                _ => {
                    parts.push(TemplatePart::Text(rest[..=open].to_owned()));
                    rest = after;
                }
            }
        }
        parts.push(TemplatePart::Text(rest.to_owned()));
        parts.retain(|part| part != &TemplatePart::Text(String::new()));
        Ok(Self { parts })
    }

    /// Whether the name is the same for every match.
    pub fn is_fixed(&self) -> bool {
        !self
            .parts
            .iter()
            .any(|p| matches!(p, TemplatePart::Capture(_)))
    }

    /// The name for these captures; an error when a capture would make it empty, longer than
    /// [`MAX_DATABASE_NAME`] or hold characters other than letters, digits, `-`, `_` and `.`.
    pub fn render(&self, captures: &Captures<'_>) -> Result<String, &'static str> {
        let mut name = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(text) => name.push_str(text),
                TemplatePart::Capture(number) => name.push_str(captures.get(*number).unwrap_or("")),
            }
            if name.len() > MAX_DATABASE_NAME {
                return Err("the captured database name is too long");
            }
        }
        if self.is_fixed() {
            return Ok(name);
        }
        if name.is_empty() {
            return Err("the captured database name is empty");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err("the captured database name has characters other than [A-Za-z0-9._-]");
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(pattern: &str, value: &str) -> Option<Vec<String>> {
        let pattern = Pattern::parse(pattern).unwrap();
        let captures = pattern.captures(value)?;
        Some(
            (1..=pattern.stars())
                .map(|n| captures.get(n).unwrap().to_owned())
                .collect(),
        )
    }

    #[test]
    fn patterns_are_anchored_and_stars_take_as_little_as_they_can() {
        assert_eq!(
            taken("evs-db-*-writer", "evs-db-orders-writer").unwrap(),
            ["orders"]
        );
        assert_eq!(
            taken("db-*-*", "db-orders-eu-writer").unwrap(),
            ["orders", "eu-writer"]
        );
        assert_eq!(taken("*", "").unwrap(), [""]);
        assert_eq!(taken("a*a", "aa").unwrap(), [""]);
        assert!(taken("a*a", "a").is_none(), "pieces may not overlap");
        assert!(taken("evs-db-*-writer", "xevs-db-orders-writer").is_none());
        assert!(taken("evs-db-*-writer", "evs-db-orders-writers").is_none());
        assert!(taken("platform", "platform-admins").is_none(), "exact");
        assert_eq!(taken("platform", "platform").unwrap(), Vec::<String>::new());
        assert_eq!(taken(r"a\*b*", "a*bc").unwrap(), ["c"]);
        assert!(
            taken(r"a\*b", "axb").is_none(),
            "an escaped star is literal"
        );
    }

    #[test]
    fn bad_patterns_say_why() {
        for (bad, says) in [
            ("", "empty"),
            ("a**b", "ambiguous"),
            (r"a\b", "followed by"),
            ("*-*-*-*-*-*-*-*-*-*", "at most 9"),
        ] {
            let error = Pattern::parse(bad).unwrap_err();
            assert!(error.to_string().contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn templates_fill_captures_and_refuse_names_no_database_may_have() {
        let pattern = Pattern::parse("evs-db-*-writer").unwrap();
        let template = NameTemplate::parse("{1}", 1).unwrap();
        let name = |value: &str| template.render(&pattern.captures(value).unwrap());
        assert_eq!(name("evs-db-orders-writer").unwrap(), "orders");
        assert!(name("evs-db--writer").unwrap_err().contains("empty"));
        let long = format!("evs-db-{}-writer", "x".repeat(1024));
        assert!(name(&long).unwrap_err().contains("too long"));
        assert!(
            name("evs-db-a/b-writer")
                .unwrap_err()
                .contains("characters")
        );
        assert!(
            NameTemplate::parse("{2}", 1)
                .unwrap_err()
                .to_string()
                .contains("{2}")
        );
        assert!(NameTemplate::parse("{0}", 1).is_err());
        let mixed = NameTemplate::parse("eu-{1}-{x}", 1).unwrap();
        let captures = pattern.captures("evs-db-orders-writer").unwrap();
        assert_eq!(
            mixed.render(&captures).unwrap_err(),
            "the captured database name has characters other than [A-Za-z0-9._-]"
        );
        let fixed = NameTemplate::parse("prod{x}", 1).unwrap();
        assert!(fixed.is_fixed());
        assert_eq!(fixed.render(&captures).unwrap(), "prod{x}");
    }
}
