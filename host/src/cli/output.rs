//! Command output: the same rows as an aligned table (default) or as JSON (`--json`).

use serde_json::Value;

/// A column: its header and the key of the row field it shows.
pub type Column = (&'static str, &'static str);

/// Prints `rows` as a table of `columns`, or as a JSON array.
pub fn print(json: bool, columns: &[Column], rows: &[Value]) {
    if json {
        println!("{}", serde_json::to_string_pretty(rows).expect("JSON values serialize"));
        return;
    }
    let cells: Vec<Vec<String>> =
        rows.iter().map(|row| columns.iter().map(|(_, key)| cell(row.get(*key))).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (header, _))| {
            cells.iter().map(|r| r[i].chars().count()).chain([header.len()]).max().unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        let text: Vec<String> = values.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(columns.iter().map(|(h, _)| *h).collect());
    for row in &cells {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints one object: as `key: value` lines, or as JSON.
pub fn print_one(json: bool, value: &Value) {
    if json {
        println!("{}", serde_json::to_string_pretty(value).expect("JSON values serialize"));
        return;
    }
    if let Some(map) = value.as_object() {
        let width = map.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in map {
            println!("{k:<width$}  {}", cell(Some(v)));
        }
    }
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items.iter().map(|v| cell(Some(v))).collect::<Vec<_>>().join(","),
        Some(v) => v.to_string(),
    }
}

/// CPU in cores from thousandths, for display.
pub fn cores(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        format!("{}", milli / 1000)
    } else {
        format!("{:.3}", milli as f64 / 1000.0).trim_end_matches('0').to_string()
    }
}

/// A `cpu/mem` summary of resources.
pub fn resources(r: Option<&berth_proto::v1::Resources>) -> String {
    match r {
        Some(r) => format!("{} cpu, {} MiB", cores(r.milli_cpus), r.mem_mib),
        None => "-".into(),
    }
}
