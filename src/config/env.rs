//! The environment's side of configuration: how `HERALD_SECTION_KEY` names a key of the
//! TOML tree, how its text becomes a value of the key's type, and which key a variable that
//! names none was probably meant for.

/// Finds the leaf addressed by an underscore-joined lowercase path such as
/// `connections_keep_alive_interval_ms`, trying every split against the keys that exist.
pub(super) fn find_key<'a>(value: &'a mut toml::Value, path: &str) -> Option<&'a mut toml::Value> {
    let table = value.as_table_mut()?;
    // An exact leaf match wins; otherwise descend into the table whose key prefixes the path.
    let exact = table
        .keys()
        .find(|k| k.to_ascii_lowercase() == path && !table[*k].is_table())
        .cloned();
    if let Some(key) = exact {
        return table.get_mut(&key);
    }
    let prefix = table
        .iter()
        .filter(|(k, v)| {
            v.is_table()
                && path.len() > k.len()
                && path.as_bytes()[k.len()] == b'_'
                && path[..k.len()] == k.to_ascii_lowercase()
        })
        .map(|(k, _)| k.clone())
        .max_by_key(String::len)?;
    let rest = path[prefix.len() + 1..].to_string();
    find_key(table.get_mut(&prefix)?, &rest)
}

/// Every leaf key of `value`, underscore-joined as environment variables name them.
fn leaf_keys(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    let Some(table) = value.as_table() else {
        return;
    };
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.to_ascii_lowercase()
        } else {
            format!("{prefix}_{}", k.to_ascii_lowercase())
        };
        if v.is_table() {
            leaf_keys(v, &path, out);
        } else {
            out.push(path);
        }
    }
}

/// The key nearest to `path` by edit distance, if one is near enough to be a likely typo.
pub(super) fn nearest_key(tree: &toml::Value, path: &str) -> Option<String> {
    let mut keys = Vec::new();
    leaf_keys(tree, "", &mut keys);
    keys.into_iter()
        .map(|k| (edit_distance(&k, path), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance, on bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(prev + usize::from(x != y));
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Parses an environment value as the same TOML type as the value it replaces.
pub(super) fn parse_like(old: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    match old {
        toml::Value::String(_) => Ok(toml::Value::String(raw.to_string())),
        toml::Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("`{raw}` is not an integer")),
        toml::Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| format!("`{raw}` is not a number")),
        toml::Value::Boolean(_) => match raw.trim() {
            "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("`{raw}` is not a boolean")),
        },
        toml::Value::Array(_) => {
            // A TOML array literal, or a comma-separated list of strings.
            if raw.trim_start().starts_with('[') {
                let doc: toml::Table = toml::from_str(&format!("v = {raw}"))
                    .map_err(|e| format!("`{raw}` is not a TOML array: {e}"))?;
                Ok(doc["v"].clone())
            } else {
                Ok(toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                ))
            }
        }
        _ => Err("this key cannot be set from the environment".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_key_and_strangers_none() {
        let tree: toml::Value =
            toml::from_str("[server]\nlisten = \"\"\nlisten_backlog = 1\n").unwrap();
        assert_eq!(
            nearest_key(&tree, "server_listn").as_deref(),
            Some("server_listen")
        );
        assert_eq!(nearest_key(&tree, "port"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
