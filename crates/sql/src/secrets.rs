//! Secret values never shown. Wherever SQL text or connector properties
//! appear — a rendered SQL error, `explain`, the jobs API, logs — the
//! values of keys whose name contains `password`, `secret`, `token`,
//! `credential`, `sasl_pass` or `sasl.jaas` are replaced by `***`, and so
//! is the password of a `scheme://user:password@host` URL. The same words
//! decide which log fields and Kafka client properties are never shown.

/// Words that make a property key secret (compared case-insensitively).
const SECRET_WORDS: &[&str] = &[
    "password",
    "secret",
    "token",
    "credential",
    "sasl_pass",
    "sasl.jaas",
];

/// What a secret value is shown as.
pub const MASK: &str = "***";

/// Whether the value of property `key` is secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// `value` as it may be shown for property `key`.
pub fn shown_value<'a>(key: &str, value: &'a str) -> std::borrow::Cow<'a, str> {
    if is_secret_key(key) {
        MASK.into()
    } else if value.contains("://") {
        without_url_passwords(value).into()
    } else {
        value.into()
    }
}

/// `text` (SQL, a message, a configuration excerpt) with every secret
/// masked: `'key' = 'value'` pairs of secret keys, `key=value` and
/// `key: value` words of secret keys, and URL passwords.
pub fn mask(text: &str) -> String {
    let text = without_url_passwords(text);
    let text = mask_quoted_pairs(&text);
    mask_bare_pairs(&text)
}

/// `'secret.key' = 'value'` → `'secret.key' = '***'` (SQL's `''` escape
/// inside the value is kept inside the masked span).
fn mask_quoted_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('\'') {
        let Some(close) = rest[open + 1..].find('\'').map(|c| open + 1 + c) else {
            break;
        };
        let key = &rest[open + 1..close];
        out.push_str(&rest[..=close]);
        rest = &rest[close + 1..];
        let after = rest.trim_start();
        let Some(value) = after
            .strip_prefix('=')
            .map(str::trim_start)
            .filter(|v| v.starts_with('\'') && is_secret_key(key))
        else {
            continue;
        };
        // the value's closing quote: a quote not doubled
        let body = &value[1..];
        let mut end = None;
        let mut i = 0;
        let bytes = body.as_bytes();
        while i < bytes.len() {
            if bytes[i] == b'\'' {
                if bytes.get(i + 1) == Some(&b'\'') {
                    i += 2;
                    continue;
                }
                end = Some(i);
                break;
            }
            i += 1;
        }
        let end = end.unwrap_or(body.len());
        out.push_str(&rest[..rest.len() - value.len()]);
        out.push('\'');
        out.push_str(MASK);
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

/// `password=value`, `"sasl_password": "value"` and `password: value`
/// outside quotes (libpq connection strings, YAML, JSON) → masked value.
fn mask_bare_pairs(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some((at, word)) = SECRET_WORDS
        .iter()
        .filter_map(|w| lower[search..].find(w).map(|i| (search + i, *w)))
        .min()
    {
        // the rest of the key (`password_file`, `sasl_password"`), then = or :
        let mut i = at + word.len();
        let bytes = text.as_bytes();
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || b"._-".contains(&bytes[i])) {
            i += 1;
        }
        while i < bytes.len() && b"\"' ".contains(&bytes[i]) {
            i += 1;
        }
        search = i.max(at + 1);
        if i >= bytes.len() || !(bytes[i] == b'=' || bytes[i] == b':') {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let quoted = i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'');
        let start = if quoted { i + 1 } else { i };
        let end = match quoted {
            true => text[start..]
                .find(bytes[i] as char)
                .map_or(text.len(), |e| start + e),
            false => text[start..]
                .find(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '}' || c == '&')
                .map_or(text.len(), |e| start + e),
        };
        if end == start || &text[start..end] == MASK {
            continue;
        }
        out.push_str(&text[copied..start]);
        out.push_str(MASK);
        copied = end;
        search = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// `text` with the password of every `scheme://user:password@` URL masked.
pub fn without_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // the user info ends at '@', before any '/', quote or space
        let end = tail
            .find(|c: char| c == '/' || c == '\'' || c == '"' || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..end]
            .rfind('@')
            .and_then(|a| tail[..a].find(':').map(|c| (c, a)))
        {
            Some((colon, at)) => {
                out.push_str(&tail[..=colon]);
                out.push_str(MASK);
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked_and_the_rest_kept() {
        assert_eq!(
            without_url_passwords("'r.url' = 'postgresql://app:s3cret@db:5432/x?sslmode=require'"),
            "'r.url' = 'postgresql://app:***@db:5432/x?sslmode=require'"
        );
        assert_eq!(
            without_url_passwords("'a' = 'postgres://app@db/x', 'b' = 'http://h:80/p'"),
            "'a' = 'postgres://app@db/x', 'b' = 'http://h:80/p'"
        );
    }

    #[test]
    fn secret_properties_are_masked_wherever_they_appear() {
        assert_eq!(
            mask("WITH ('out.sasl.password' = 'hunter2', 'out.topic' = 't')"),
            "WITH ('out.sasl.password' = '***', 'out.topic' = 't')"
        );
        assert_eq!(
            mask("'api.token'='it''s-secret' , 'x' = 'y'"),
            "'api.token'='***' , 'x' = 'y'"
        );
        assert_eq!(
            mask("'sasl.jaas.config' = 'org.Plain required password=\"p\";'"),
            "'sasl.jaas.config' = '***'"
        );
        assert_eq!(
            mask("host=db user=app password=s3cret dbname=x"),
            "host=db user=app password=*** dbname=x"
        );
        assert_eq!(
            mask(r#"{"sasl_password": "hunter2", "user": "u"}"#),
            r#"{"sasl_password": "***", "user": "u"}"#
        );
        assert_eq!(mask("  client_secret: abc\n"), "  client_secret: ***\n");
        // a word alone, or a key whose value is already masked, is left as it is
        assert_eq!(mask("the password is wrong"), "the password is wrong");
        assert_eq!(mask("'k.password' = '***'"), "'k.password' = '***'");
        assert!(is_secret_key("DB_PASSWORD") && !is_secret_key("topic"));
    }
}
