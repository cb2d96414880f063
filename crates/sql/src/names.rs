//! The rule for names that become paths: an application's name, a
//! statement's or job's name (`CREATE STREAM name`, `-- @name:`) name
//! directories under the state directory, lock files and staging files,
//! so a name must stay one path component inside its parent.

/// The longest name accepted (a path component is at most 255 bytes).
const MAX_LEN: usize = 200;

/// Checks `name`, a name of kind `what` ("application", "job"):
/// letters, digits, `_`, `-` and `.`, no `..`, not `.` alone, and at most
/// [`MAX_LEN`] bytes. The error says which rule the name breaks.
pub fn check_path_name(what: &str, name: &str) -> Result<(), String> {
    let rule = "letters, digits, '_', '-' and '.', without '..'";
    if name.is_empty() {
        return Err(format!("the {what} name cannot be empty; use {rule}"));
    }
    if name.len() > MAX_LEN {
        return Err(format!(
            "{what} name '{}…' is longer than {MAX_LEN} bytes",
            name.chars().take(40).collect::<String>()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "{what} name '{name}' contains {c:?}; a name that becomes a path uses {rule}"
        ));
    }
    if name == "." || name.contains("..") {
        return Err(format!(
            "{what} name '{name}' could leave its directory; a name that becomes a path uses {rule}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_path_name;

    #[test]
    fn names_stay_one_path_component() {
        for ok in ["totals", "large_trades-v2", "q1.5", "Überweisungen"] {
            check_path_name("job", ok).unwrap();
        }
        for (bad, why) in [
            ("../x", "contains '/'"),
            ("/etc", "contains '/'"),
            ("..", "could leave"),
            (".", "could leave"),
            ("a..b", "could leave"),
            ("", "cannot be empty"),
            ("a b", "contains ' '"),
            ("a\\b", "contains '\\\\'"),
        ] {
            let e = check_path_name("job", bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(check_path_name("job", &"x".repeat(201))
            .unwrap_err()
            .contains("longer than 200"));
    }
}
