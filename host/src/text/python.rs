//! Python's `json.dumps` for template values: the `tojson` filter of chat
//! templates.
//!
//! Hugging Face transformers replaces Jinja's HTML-safe `tojson` with
//! `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
//! sort_keys=False)`, and models are trained on exactly that text (tool
//! definitions in the system prompt, tool-call arguments). MiniJinja's own
//! `tojson` escapes `<`, `>`, `&` and `'` and uses compact separators, which
//! would put different tokens in front of the model than it saw in training.
//! (Plain `{{ value }}` output needs nothing: MiniJinja 3 already prints
//! `None`, `True` and lists/dicts in Python's `repr` form.)

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// How to lay out the JSON, mirroring `json.dumps` keyword arguments.
struct Layout {
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// The `tojson` filter: `value | tojson(indent=None, separators=None,
/// sort_keys=False, ensure_ascii=False)`.
pub fn tojson_filter(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
        Some(v) => {
            let n = i64::try_from(v)?;
            Some(" ".repeat(n.max(0) as usize))
        }
    };
    let separators: Option<Value> = kwargs.get("separators")?;
    let (item_separator, key_separator) = match separators {
        Some(v) if !v.is_none() => {
            let item = v.get_item_by_index(0)?;
            let key = v.get_item_by_index(1)?;
            match (item.as_str(), key.as_str()) {
                (Some(i), Some(k)) => (i.to_owned(), k.to_owned()),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ));
                }
            }
        }
        // json.dumps: (', ', ': ') without indent, (',', ': ') with one.
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    let layout = Layout {
        indent,
        item_separator,
        key_separator,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_value(&mut out, value, &layout, 0)?;
    // Safe: the output is JSON, not HTML; chat templates never auto-escape.
    Ok(Value::from_safe_string(out))
}

/// `json.dumps(value, ensure_ascii=False)` with Python's default separators.
pub fn dumps(value: &Value) -> Result<String, Error> {
    let layout = Layout {
        indent: None,
        item_separator: ", ".to_owned(),
        key_separator: ": ".to_owned(),
        sort_keys: false,
        ensure_ascii: false,
    };
    let mut out = String::new();
    write_value(&mut out, value, &layout, 0)?;
    Ok(out)
}

fn write_value(
    out: &mut String,
    value: &Value,
    layout: &Layout,
    depth: usize,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                out.push_str(&value.to_string());
            } else {
                out.push_str(&python_float(f64::try_from(value.clone())?));
            }
        }
        ValueKind::String => {
            write_string(out, value.as_str().unwrap_or_default(), layout.ensure_ascii)
        }
        ValueKind::Bytes => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: bytes are not JSON serializable",
            ));
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if layout.sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&layout.item_separator);
                }
                newline_indent(out, layout, depth + 1);
                // json.dumps turns non-string keys into strings.
                let key_text = match key.as_str() {
                    Some(s) => s.to_owned(),
                    None => key.to_string(),
                };
                write_string(out, &key_text, layout.ensure_ascii);
                out.push_str(&layout.key_separator);
                write_value(out, &value.get_item(key)?, layout, depth + 1)?;
            }
            newline_indent(out, layout, depth);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&layout.item_separator);
                }
                newline_indent(out, layout, depth + 1);
                write_value(out, item, layout, depth + 1)?;
            }
            newline_indent(out, layout, depth);
            out.push(']');
        }
        ValueKind::Plain | ValueKind::Invalid => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialize {}", value.kind()),
            ));
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialize {}", value.kind()),
            ));
        }
    }
    Ok(())
}

fn newline_indent(out: &mut String, layout: &Layout, depth: usize) {
    if let Some(indent) = &layout.indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(indent);
        }
    }
}

/// A JSON string literal the way Python's json module escapes it.
fn write_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` as json.dumps writes it (`1.0`, `1e-07`, `1e+16`,
/// `NaN`, `Infinity`).
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let magnitude = x.abs();
    if x != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        // Shortest round-trip digits in exponent form, exponent as Python
        // writes it: a sign and at least two digits.
        let s = format!("{x:e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exponent),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let s = format!("{x:?}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.5), "0.5");
        assert_eq!(python_float(-2.25), "-2.25");
        assert_eq!(python_float(1e16), "1e+16");
        assert_eq!(python_float(1.5e-7), "1.5e-07");
        assert_eq!(python_float(0.0001), "0.0001");
        assert_eq!(python_float(123456789.125), "123456789.125");
    }

    #[test]
    fn strings_keep_non_ascii_and_escape_controls() {
        let mut out = String::new();
        write_string(&mut out, "北京 \"q\" <b>\n\u{1}", false);
        assert_eq!(out, "\"北京 \\\"q\\\" <b>\\n\\u0001\"");
        let mut ascii = String::new();
        write_string(&mut ascii, "é🙂", true);
        assert_eq!(ascii, "\"\\u00e9\\ud83d\\ude42\"");
    }

    #[test]
    fn maps_keep_insertion_order_with_python_separators() {
        let value: Value =
            serde_json::from_str(r#"{"b": 1, "a": [true, null, 2.0], "c": {}}"#).unwrap();
        assert_eq!(
            dumps(&value).unwrap(),
            r#"{"b": 1, "a": [true, null, 2.0], "c": {}}"#
        );
    }
}
