//! A tiny CSV reader and writer: comma-separated, optional double quotes ("" inside quotes
//! is a quote), one record per line. Enough for traces, metadata and results, which pandas
//! reads as they are.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem with an input file, pointing at the line: "file:line: reason".
#[derive(Debug, Clone, PartialEq)]
pub struct InputError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
        }
    }
}

impl std::error::Error for InputError {}

/// A whole CSV file: its header and its records with their line numbers.
pub struct Table {
    pub file: PathBuf,
    pub header: Vec<String>,
    pub rows: Vec<(usize, Vec<String>)>,
}

impl Table {
    pub fn read(path: &Path) -> Result<Table, InputError> {
        let text = std::fs::read_to_string(path).map_err(|e| InputError {
            file: path.to_path_buf(),
            line: 0,
            reason: format!("cannot read the file: {e}"),
        })?;
        Table::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Table, InputError> {
        let err = |line, reason: String| InputError { file: path.to_path_buf(), line, reason };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
        let (hl, header) = loop {
            match lines.next() {
                Some((_, l)) if l.trim().is_empty() => continue,
                Some((n, l)) => break (n, l),
                None => return Err(err(0, "the file is empty (a header line is expected)".into())),
            }
        };
        let header: Vec<String> =
            split(header).map_err(|r| err(hl, r))?.into_iter().map(|h| h.trim().to_string()).collect();
        let mut rows = Vec::new();
        for (n, l) in lines {
            if l.trim().is_empty() {
                continue;
            }
            let fields = split(l).map_err(|r| err(n, r))?;
            if fields.len() != header.len() {
                return Err(err(n, format!("{} fields where the header has {}", fields.len(), header.len())));
            }
            rows.push((n, fields));
        }
        Ok(Table { file: path.to_path_buf(), header, rows })
    }

    /// The index of a required column.
    pub fn column(&self, name: &str) -> Result<usize, InputError> {
        self.header.iter().position(|h| h == name).ok_or_else(|| InputError {
            file: self.file.clone(),
            line: 1,
            reason: format!("no column {name:?} (the header has {})", self.header.join(",")),
        })
    }

    pub fn error(&self, line: usize, reason: impl Into<String>) -> InputError {
        InputError { file: self.file.clone(), line, reason: reason.into() }
    }

    /// A field parsed as a finite number.
    pub fn number(&self, line: usize, row: &[String], col: usize) -> Result<f64, InputError> {
        let raw = row[col].trim();
        match raw.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err(self.error(line, format!("{} is not a number: {raw:?}", self.header[col]))),
        }
    }
}

/// A CSV file read record by record, for files too large to hold (traces of millions of
/// invocations). `table` holds the header only, for column look-ups and errors.
pub struct Records {
    pub table: Table,
    lines: std::io::Lines<std::io::BufReader<std::fs::File>>,
    line: usize,
}

impl Records {
    pub fn open(path: &Path) -> Result<Records, InputError> {
        use std::io::BufRead;
        let err = |line, reason: String| InputError { file: path.to_path_buf(), line, reason };
        let file = std::fs::File::open(path).map_err(|e| err(0, format!("cannot read the file: {e}")))?;
        let mut lines = std::io::BufReader::with_capacity(1 << 16, file).lines();
        let mut line = 0;
        let header = loop {
            line += 1;
            match lines.next() {
                Some(Ok(l)) if l.trim().is_empty() => continue,
                Some(Ok(l)) => break l,
                Some(Err(e)) => return Err(err(line, format!("cannot read the file: {e}"))),
                None => return Err(err(0, "the file is empty (a header line is expected)".into())),
            }
        };
        let header = split(header.trim_end_matches('\r')).map_err(|r| err(line, r))?;
        let header = header.into_iter().map(|h| h.trim().to_string()).collect();
        Ok(Records { table: Table { file: path.to_path_buf(), header, rows: Vec::new() }, lines, line })
    }

    /// The next record and its line number, skipping blank lines.
    pub fn next_record(&mut self) -> Option<Result<(usize, Vec<String>), InputError>> {
        loop {
            self.line += 1;
            let l = match self.lines.next()? {
                Ok(l) => l,
                Err(e) => return Some(Err(self.table.error(self.line, format!("cannot read the file: {e}")))),
            };
            let l = l.trim_end_matches('\r');
            if l.trim().is_empty() {
                continue;
            }
            let fields = match split(l) {
                Ok(f) => f,
                Err(r) => return Some(Err(self.table.error(self.line, r))),
            };
            if fields.len() != self.table.header.len() {
                let why = format!("{} fields where the header has {}", fields.len(), self.table.header.len());
                return Some(Err(self.table.error(self.line, why)));
            }
            return Some(Ok((self.line, fields)));
        }
    }
}

pub fn split(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.trim().is_empty() && !was_quoted => {
                cur.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            (false, '"') => return Err("a quote in the middle of an unquoted field".into()),
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("an unterminated quoted field".into());
    }
    fields.push(cur);
    Ok(fields)
}

/// One field for writing: quoted when it holds a comma, a quote or a line break.
pub fn field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")).into() } else { s.into() }
}

/// One record for writing, with its line break.
pub fn record<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = fields.iter().map(|f| field(f.as_ref())).collect::<Vec<_>>().join(",");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_round_trip() {
        let line = record(&["a,b", "say \"hi\"", "plain"]);
        assert_eq!(split(line.trim_end()).unwrap(), vec!["a,b", "say \"hi\"", "plain"]);
    }

    #[test]
    fn errors_name_the_line() {
        let t = Table::parse(Path::new("x.csv"), "a,b\n1,2\n3\n");
        let e = t.err().unwrap();
        assert_eq!(e.line, 3);
        assert_eq!(e.to_string(), "x.csv:3: 1 fields where the header has 2");
        assert!(split("a,\"b").is_err());
    }
}
