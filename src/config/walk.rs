//! Reading a TOML document key by key, in tierlb's own words: each getter checks the type and
//! the value of one key and records what is wrong (with the file, the line and the dotted key)
//! instead of stopping, so one run reports every error in the file. Unknown keys are found by
//! listing what a table holds against what it may hold.

use std::ops::Range;
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use super::{duration, ConfigError};

/// Longest accepted duration: far beyond any useful timeout, and far enough below the clock's
/// range that deadlines computed from it never overflow.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Where a value is in the file (byte offsets), when known.
pub(super) type Span = Option<Range<usize>>;

/// A table being read, with its dotted name.
pub(super) struct Section<'t> {
    /// Dotted name (empty at the top level), e.g. `health` or `nodes[1]`.
    pub name: String,
    pub table: &'t dyn TableLike,
}

impl<'t> Section<'t> {
    /// The dotted key of `key` in this table.
    pub fn key(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.name)
        }
    }
}

/// What the file says about a value's type, for messages: "the number 2".
fn found(item: &Item) -> String {
    match item {
        Item::Value(Value::String(s)) => format!("the string \"{}\"", s.value()),
        Item::Value(Value::Integer(i)) => format!("the number {}", i.value()),
        Item::Value(Value::Float(f)) => format!("the number {}", f.value()),
        Item::Value(Value::Boolean(b)) => format!("{}", b.value()),
        Item::Value(Value::Datetime(_)) => "a date".to_owned(),
        Item::Value(Value::Array(_)) => "a list".to_owned(),
        Item::Value(Value::InlineTable(_)) | Item::Table(_) => "a table".to_owned(),
        Item::ArrayOfTables(_) => "a list of tables".to_owned(),
        Item::None => "nothing".to_owned(),
    }
}

/// The errors and warnings found so far in one file.
pub(super) struct Walk<'a> {
    pub text: &'a str,
    pub path: &'a str,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
}

/// Keys tierlb once took, each with why it went and what to do: a config that still has one is
/// told so, rather than that the key is unknown.
const REMOVED: [(&str, &str); 1] = [(
    "node_close",
    "its \"reset-at-rest\" could end a client's answer early (a node's reply still on its way \
     was refused); delete the line: the client's FIN is always passed on to the node, and \
     docs/performance.md shows how to keep ports free under churn",
)];

impl<'a> Walk<'a> {
    /// The 1-based line of a byte offset.
    pub fn line(&self, span: &Span) -> usize {
        let at = span.as_ref().map_or(0, |s| s.start).min(self.text.len());
        self.text[..at].bytes().filter(|b| *b == b'\n').count() + 1
    }

    /// Records that the value of `key` at `span` is wrong.
    pub fn error(&mut self, key: &str, span: &Span, message: String) {
        let line = self.line(span);
        self.errors.push(ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            key: key.to_owned(),
            message,
        });
    }

    /// Records a value that is legal but likely wrong.
    pub fn warn(&mut self, key: &str, span: &Span, message: String) {
        let line = self.line(span);
        self.warnings
            .push(format!("{}:{line}: `{key}` {message}", self.path));
    }

    /// Reports every key of `section` that is not in `known`; `what` names the table in the
    /// message ("the top level", "[health]", "a node table").
    pub fn unknown_keys(&mut self, section: &Section<'_>, known: &[&str], what: &str) {
        for (key, item) in section.table.iter() {
            if !known.contains(&key) {
                let span = section
                    .table
                    .key(key)
                    .and_then(|k| k.span())
                    .or(item.span());
                let message = match REMOVED.iter().find(|(name, _)| *name == key) {
                    Some((_, why)) => format!("was removed: {why}"),
                    None => format!(
                        "is not a key tierlb knows; {what} may have {}",
                        known.join(", ")
                    ),
                };
                self.error(&section.key(key), &span, message);
            }
        }
    }

    /// The item of `key` and its span, if present.
    pub fn item<'t>(&self, section: &Section<'t>, key: &str) -> Option<(&'t Item, Span)> {
        let item = section.table.get(key)?;
        let span = item
            .span()
            .or_else(|| section.table.key(key).and_then(|k| k.span()));
        Some((item, span))
    }

    /// Records a value of the wrong type.
    pub fn wrong_type(&mut self, key: &str, span: &Span, expected: &str, item: &Item) {
        let found = found(item);
        self.error(key, span, format!("must be {expected} (found {found})"));
    }

    /// A string value.
    pub fn string<'t>(
        &mut self,
        section: &Section<'t>,
        key: &str,
        expected: &str,
    ) -> Option<(&'t str, Span)> {
        let (item, span) = self.item(section, key)?;
        match item.as_str() {
            Some(s) => Some((s, span)),
            None => {
                self.wrong_type(&section.key(key), &span, expected, item);
                None
            }
        }
    }

    /// A boolean, `true` or `false`.
    pub fn flag(&mut self, section: &Section<'_>, key: &str) -> Option<bool> {
        let (item, span) = self.item(section, key)?;
        let flag = item.as_bool();
        if flag.is_none() {
            self.wrong_type(&section.key(key), &span, "true or false", item);
        }
        flag
    }

    /// A whole number from `min` to `max`.
    pub fn count(&mut self, section: &Section<'_>, key: &str, min: i64, max: u32) -> Option<u32> {
        let (item, span) = self.item(section, key)?;
        let dotted = section.key(key);
        let Some(value) = item.as_integer() else {
            let expected = format!("a whole number from {min} to {max}");
            self.wrong_type(&dotted, &span, &expected, item);
            return None;
        };
        match u32::try_from(value) {
            Ok(n) if value >= min && n <= max => Some(n),
            _ => {
                let message = format!("is {value}; it must be a whole number from {min} to {max}");
                self.error(&dotted, &span, message);
                None
            }
        }
    }

    /// A list of source ranges (`"10.0.0.0/8"`, `"127.0.0.1"`), each bad one named.
    pub fn ranges(&mut self, section: &Section<'_>, key: &str) -> Option<Vec<super::Cidr>> {
        let list = self.strings(section, key)?;
        let mut out = Vec::with_capacity(list.len());
        for (i, (text, span)) in list.into_iter().enumerate() {
            match text.parse::<super::Cidr>() {
                Ok(range) => out.push(range),
                Err(message) => self.error(&format!("{}[{i}]", section.key(key)), &span, message),
            }
        }
        Some(out)
    }

    /// A duration with a unit, at most [`MAX_DURATION`]; zero only if `zero_ok`.
    pub fn duration(
        &mut self,
        section: &Section<'_>,
        key: &str,
        zero_ok: bool,
    ) -> Option<(Duration, Span)> {
        let expected = "a duration with a unit, such as \"2s\" or \"500ms\"";
        let (text, span) = self.string(section, key, expected)?;
        let dotted = section.key(key);
        match duration::parse(text) {
            Err(why) => {
                let message = format!("`{text}` is not a duration ({why}); write {expected}");
                self.error(&dotted, &span, message);
                None
            }
            Ok(d) if d.is_zero() && !zero_ok => {
                let message =
                    "must be above zero (zero would spin or never finish), e.g. \"1s\"".to_owned();
                self.error(&dotted, &span, message);
                None
            }
            Ok(d) if d > MAX_DURATION => {
                let message =
                    "must be at most 365 days (for \"no limit\", 365 days is as good as forever)"
                        .to_owned();
                self.error(&dotted, &span, message);
                None
            }
            Ok(d) => Some((d, span)),
        }
    }

    /// A list of strings.
    pub fn strings<'t>(
        &mut self,
        section: &Section<'t>,
        key: &str,
    ) -> Option<Vec<(&'t str, Span)>> {
        let (item, span) = self.item(section, key)?;
        let dotted = section.key(key);
        let Some(array) = item.as_array() else {
            self.wrong_type(&dotted, &span, "a list of strings", item);
            return None;
        };
        let mut out = Vec::new();
        for (i, value) in array.iter().enumerate() {
            match value.as_str() {
                Some(s) => out.push((s, value.span())),
                None => {
                    let item = Item::Value(value.clone());
                    self.wrong_type(&format!("{dotted}[{i}]"), &value.span(), "a string", &item);
                }
            }
        }
        Some(out)
    }

    /// A sub-table, `[name]` or `name = { ... }`.
    pub fn table<'t>(&mut self, section: &Section<'t>, key: &str) -> Option<&'t dyn TableLike> {
        let (item, span) = self.item(section, key)?;
        let table = item.as_table_like();
        if table.is_none() {
            self.wrong_type(&section.key(key), &span, "a table", item);
        }
        table
    }
}
