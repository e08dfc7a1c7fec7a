//! Rules indexed so that a Check tries only the rules that can match.
//!
//! Rules are grouped by what they read (one claim, one attribute, or the values a source
//! passes), so each group's values are read once. Within a group, a rule's pattern starts with
//! a literal prefix (`evs-db-` of `evs-db-*-writer`, the whole value of an exact pattern); a
//! value is looked up under each distinct prefix length the group has, so 50 rules over 30
//! groups cost about 30 × (distinct lengths) hash look-ups instead of 1,500 pattern tries.

use std::collections::HashMap;

use super::pattern::Captures;
use super::{Matched, Read, Rule};

/// The rules of a set, grouped by what they read and indexed by literal prefix.
#[derive(Debug, Default)]
pub(super) struct RuleIndex {
    groups: Vec<ReadGroup>,
}

/// The rules that read one thing.
#[derive(Debug)]
struct ReadGroup {
    /// A rule of the group (it reads the values for all of them).
    reader: usize,
    /// The distinct prefix lengths, ascending.
    lengths: Vec<usize>,
    /// Rule positions by prefix.
    by_prefix: HashMap<Box<str>, Vec<usize>>,
}

impl RuleIndex {
    pub(super) fn build(rules: &[Rule]) -> Self {
        let mut groups: Vec<ReadGroup> = Vec::new();
        for (position, rule) in rules.iter().enumerate() {
            let group = match groups
                .iter_mut()
                .position(|g| rules[g.reader].matched == rule.matched)
            {
                Some(found) => &mut groups[found],
                None => {
                    groups.push(ReadGroup {
                        reader: position,
                        lengths: Vec::new(),
                        by_prefix: HashMap::new(),
                    });
                    groups.last_mut().expect("just pushed")
                }
            };
            let prefix = rule.pattern.prefix();
            if let Err(at) = group.lengths.binary_search(&prefix.len()) {
                group.lengths.insert(at, prefix.len());
            }
            group
                .by_prefix
                .entry(prefix.into())
                .or_default()
                .push(position);
        }
        Self { groups }
    }

    /// Calls `on_match` for each (rule, value) that matches, grouped by what the rules read.
    pub(super) fn each_match(
        &self,
        rules: &[Rule],
        read: Read<'_>,
        mut on_match: impl FnMut(&Rule, &str, &Captures<'_>),
    ) {
        for group in &self.groups {
            let reader = &rules[group.reader];
            let mut try_value = |value: &str| {
                for &length in &group.lengths {
                    if length > value.len() {
                        break;
                    }
                    // Not a character boundary: no prefix of this length can be there.
                    let Some(prefix) = value.get(..length) else {
                        continue;
                    };
                    let Some(candidates) = group.by_prefix.get(prefix) else {
                        continue;
                    };
                    for &position in candidates {
                        let rule = &rules[position];
                        if let Read::Identity(identity) = read
                            && rule.issuer.as_ref().is_some_and(|i| *i != identity.issuer)
                        {
                            continue;
                        }
                        if let Some(captures) = rule.pattern.captures(value) {
                            on_match(rule, value, &captures);
                        }
                    }
                }
            };
            match (read, &reader.matched) {
                (Read::Given(values), Matched::Given) => {
                    values.iter().for_each(|value| try_value(value));
                }
                (Read::Identity(identity), _) => {
                    if let Err(reason) = reader.each_value(identity, try_value) {
                        reader.warn(&reason.to_string());
                    }
                }
                (Read::Given(_), _) => {}
            }
        }
    }
}
