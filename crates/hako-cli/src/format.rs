//! Output as Docker prints it: aligned tables, `--format` with the Go
//! template subset people use (`{{.Field}}`, `{{json .}}`, `table ...`),
//! human sizes and "2 hours ago".

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One piece of a parsed template.
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    /// A pipeline: an optional function (`json`, `upper`, `lower`, `title`,
    /// `index`) and its arguments, each a field path or a string literal.
    Action {
        func: Option<String>,
        args: Vec<Arg>,
    },
}

#[derive(Debug, Clone)]
enum Arg {
    /// `.A.B`; `.` alone is the whole row.
    Path(Vec<String>),
    Str(String),
}

/// A parsed `--format` value.
#[derive(Debug, Clone)]
pub struct Template {
    pieces: Vec<Piece>,
    /// Starts with `table`: print a header row and align columns.
    pub table: bool,
}

fn unescape(s: &str) -> String {
    s.replace("\\t", "\t").replace("\\n", "\n")
}

fn parse_arg(word: &str) -> Result<Arg> {
    if let Some(s) = word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        return Ok(Arg::Str(s.to_string()));
    }
    if word == "." {
        return Ok(Arg::Path(Vec::new()));
    }
    if let Some(path) = word.strip_prefix('.') {
        return Ok(Arg::Path(path.split('.').map(str::to_string).collect()));
    }
    bail!("template: {word:?} is not a field (write .Name) or a \"string\"")
}

impl Template {
    pub fn parse(src: &str) -> Result<Template> {
        let (table, body) = match src.strip_prefix("table") {
            Some(rest) => (true, rest.trim_start()),
            None => (false, src),
        };
        let mut pieces = Vec::new();
        let mut rest = body;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(unescape(&rest[..start])));
            }
            let end = rest[start..].find("}}").with_context(|| {
                format!("template {src:?}: an action opened with {{{{ is not closed")
            })?;
            let inner = rest[start + 2..start + end].trim().trim_matches('-').trim();
            let words: Vec<&str> = inner.split_whitespace().collect();
            let piece = match words.as_slice() {
                [] => bail!("template {src:?}: empty action"),
                [single] if single.starts_with('.') => Piece::Action {
                    func: None,
                    args: vec![parse_arg(single)?],
                },
                [func, args @ ..]
                    if matches!(
                        *func,
                        "json" | "upper" | "lower" | "title" | "index" | "join" | "println"
                    ) =>
                {
                    Piece::Action {
                        func: Some((*func).to_string()),
                        args: args.iter().map(|a| parse_arg(a)).collect::<Result<_>>()?,
                    }
                }
                _ => bail!(
                    "template {src:?}: {inner:?} is not supported; use fields such as {{{{.ID}}}}, or json, upper, lower, index, join"
                ),
            };
            pieces.push(piece);
            rest = &rest[start + end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(unescape(rest)));
        }
        Ok(Template { pieces, table })
    }

    /// Renders one row.
    pub fn render(&self, row: &Value) -> Result<String> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Action { func, args } => {
                    let vals: Vec<Value> = args
                        .iter()
                        .map(|a| match a {
                            Arg::Str(s) => Ok(Value::String(s.clone())),
                            Arg::Path(path) => lookup(row, path),
                        })
                        .collect::<Result<_>>()?;
                    match (func.as_deref(), vals.as_slice()) {
                        (None, [v]) => out.push_str(&go_string(v)),
                        (Some("json"), [v]) => out.push_str(&serde_json::to_string(v)?),
                        (Some("upper"), [v]) => out.push_str(&go_string(v).to_uppercase()),
                        (Some("lower"), [v]) => out.push_str(&go_string(v).to_lowercase()),
                        (Some("title"), [v]) => {
                            let s = go_string(v);
                            let mut c = s.chars();
                            if let Some(f) = c.next() {
                                out.extend(f.to_uppercase());
                                out.push_str(c.as_str());
                            }
                        }
                        (Some("println"), vs) => {
                            out.push_str(&vs.iter().map(go_string).collect::<Vec<_>>().join(" "));
                            out.push('\n');
                        }
                        (Some("index"), [v, Value::String(k)]) => {
                            out.push_str(&v.get(k).map(go_string).unwrap_or_default());
                        }
                        (Some("join"), [Value::Array(items), Value::String(sep)]) => {
                            out.push_str(
                                &items.iter().map(go_string).collect::<Vec<_>>().join(sep),
                            );
                        }
                        (Some(f), _) => bail!("template: wrong arguments for {f}"),
                        (None, _) => bail!("template: one field per action"),
                    }
                }
            }
        }
        Ok(out)
    }

    /// The header row of a `table` template: each field's column name.
    pub fn header(&self, names: &dyn Fn(&str) -> String) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Action { func, args } => {
                    let field = args.iter().find_map(|a| match a {
                        Arg::Path(p) if !p.is_empty() => Some(p.join(".")),
                        _ => None,
                    });
                    match (func.as_deref(), field) {
                        (_, Some(f)) => out.push_str(&names(&f)),
                        (Some("json"), None) => {}
                        _ => {}
                    }
                }
            }
        }
        out
    }
}

fn lookup(row: &Value, path: &[String]) -> Result<Value> {
    let mut v = row;
    for (i, key) in path.iter().enumerate() {
        match v.get(key) {
            Some(next) => v = next,
            None if v.is_object()
                && i == path.len() - 1
                && v.as_object().is_some_and(|o| !o.contains_key(key)) =>
            {
                let fields: Vec<&String> = v
                    .as_object()
                    .map(|o| o.keys().collect())
                    .unwrap_or_default();
                bail!(
                    "template: no field {:?}; fields here: {}",
                    path.join("."),
                    fields
                        .iter()
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            None => return Ok(Value::Null),
        }
    }
    Ok(v.clone())
}

/// How Go's text/template prints a value.
pub fn go_string(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(go_string).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, v)| format!("{k}:{}", go_string(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// Aligns tab-separated columns as Docker's tabwriter does (three spaces
/// between columns; the last column is not padded).
pub fn align(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Prints rows with a `--format` value: `table ...`, `json`, or a plain
/// template (one line per row). `default` is the table used without one.
pub fn print_rows(
    rows: &[Value],
    format: Option<&str>,
    default: &str,
    names: &dyn Fn(&str) -> String,
) -> Result<()> {
    let src = format.unwrap_or(default);
    if src == "json" {
        for r in rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    let t = Template::parse(src)?;
    let mut lines = Vec::new();
    if t.table {
        lines.push(t.header(names));
    }
    for r in rows {
        lines.push(t.render(r)?);
    }
    if t.table {
        print!("{}", align(&lines));
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(())
}

/// Sizes as Docker prints them: decimal units, three significant digits
/// (`4.26MB`, `512B`, `1.2GB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    #[allow(clippy::cast_precision_loss)]
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    // Go's %.4g as Docker uses it: three significant digits, no trailing zeros.
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = if i == 0 {
        bytes.to_string()
    } else {
        let s = format!("{v:.digits$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    format!("{s}{}", UNITS[i])
}

/// "2 hours", "About a minute", as Docker's HumanDuration.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if s < 1 {
        "Less than a second".into()
    } else if s == 1 {
        "1 second".into()
    } else if s < 60 {
        plural(s, "second")
    } else if s / 60 == 1 {
        "About a minute".into()
    } else if s / 60 < 60 {
        plural(s / 60, "minute")
    } else if s / 3600 == 1 {
        "About an hour".into()
    } else if s / 3600 < 48 {
        plural(s / 3600, "hour")
    } else if s / 3600 < 24 * 7 * 2 {
        plural(s / 86_400, "day")
    } else if s / 3600 < 24 * 30 * 2 {
        plural(s / (86_400 * 7), "week")
    } else if s / 3600 < 24 * 365 * 2 {
        plural(s / (86_400 * 30), "month")
    } else {
        plural(s / (86_400 * 365), "year")
    }
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates() {
        let row = json!({"ID": "abc", "Labels": {"a": "b"}, "Tags": ["x", "y"], "Size": 5});
        let t = Template::parse(
            "{{.ID}}\\t{{json .Labels}} {{index .Labels \"a\"}} {{join .Tags \",\"}} {{.Size}}",
        )
        .unwrap();
        assert_eq!(t.render(&row).unwrap(), "abc\t{\"a\":\"b\"} b x,y 5");
        assert!(Template::parse("{{.ID").is_err());
        assert!(Template::parse("{{range .X}}").is_err());
        assert!(Template::parse("{{.Nope}}").unwrap().render(&row).is_err());
        let t = Template::parse("table {{.ID}}\t{{.Size}}").unwrap();
        assert!(t.table);
        assert_eq!(t.header(&|f: &str| f.to_uppercase()), "ID\tSIZE");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(12_345), "12.3kB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(1_000_000_000), "1GB");
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(7200), "2 hours");
        assert_eq!(human_duration(86_400 * 20), "2 weeks");
    }

    #[test]
    fn aligned_columns() {
        let out = align(&["A\tBB\tC".into(), "AAAA\tB\tC".into()]);
        assert_eq!(out, "A      BB   C\nAAAA   B    C\n");
    }
}
