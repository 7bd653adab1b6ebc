//! Parsing a settings document, and reporting every unknown key and wrong
//! type at once with its dotted key path.

use super::compat::{ignored_as_problem, outside_keys};
use super::errors::{SettingError, SettingsErrors};
use super::schema::Settings;

impl Settings {
    /// Parses a settings document. `origin` (usually the file path) names the
    /// problem when the text is not JSON at all; otherwise the dotted key path does.
    /// Does not apply the environment nor validate.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Settings, SettingsErrors> {
        let (settings, mut errors) = parse_lenient(text, origin);
        match settings {
            Some(settings) if errors.is_empty() => Ok(settings),
            // Value problems of the keys left are reported along with the others.
            Some(rest) => {
                if let Err(SettingsErrors(more)) = rest.validate() {
                    errors.extend(more);
                }
                // A refused file still lists what it ignores, so one round fixes it.
                errors.extend(rest.ignored_keys.iter().map(|key| ignored_as_problem(key)));
                Err(SettingsErrors(errors))
            }
            None => Err(SettingsErrors(errors)),
        }
    }
}

/// Parses a settings document, reporting every unknown key and wrong type, and
/// returns the settings read without the offending keys (their defaults in
/// their place), so that the other checks can still run on them; `None` when
/// the text is not a settings object at all.
pub(super) fn parse_lenient(text: &str, origin: &str) -> (Option<Settings>, Vec<SettingError>) {
    // Syntax first, so that malformed JSON is reported with line and column
    // rather than under whatever key the parser had reached.
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => return (None, vec![describe_parse_error(".", &e, origin)]),
    };
    if let Err(error) = reject_arrays_as_objects(&value, origin) {
        return (None, vec![error]);
    }
    // Keys outside tether's objects are another program's settings (SPEC §13).
    let (ignored, not_yet) = outside_keys(&value);
    let with_ignored = |mut settings: Settings| {
        settings.ignored_keys = ignored.clone();
        Some(settings)
    };
    // Then the schema, on the text rather than the tree: only the text still
    // shows a key given twice, which serde then reports as a duplicate field.
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let first = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(settings) => return (with_ignored(settings), not_yet),
        Err(e) => e,
    };
    // One line per problem: drop each offending key from the tree and parse
    // again, so that every unknown key and wrong type is named, not only the first.
    let mut errors = not_yet;
    let mut tree = value;
    let mut next = first;
    loop {
        errors.push(describe_parse_error(
            &next.path().to_string(),
            next.inner(),
            origin,
        ));
        if errors.len() >= MAX_REPORTED_PROBLEMS || !remove_at(&mut tree, next.path()) {
            return (None, errors);
        }
        match serde_path_to_error::deserialize::<_, Settings>(&tree) {
            Ok(rest) => return (with_ignored(rest), errors),
            Err(e) => next = e,
        }
    }
}

/// JSON pointers of every object in the schema (maps excluded).
const OBJECT_POINTERS: [&str; 11] = [
    "",
    "/server",
    "/server/websocket",
    "/server/websocket/auth",
    "/server/websocket/tls",
    "/server/health",
    "/limits",
    "/rooms",
    "/host",
    "/log",
    "/cluster",
];

/// serde's derived structs also accept a JSON array, filling fields by position;
/// in a config file that is a mistake, so report it as the wrong type.
fn reject_arrays_as_objects(value: &serde_json::Value, origin: &str) -> Result<(), SettingError> {
    for pointer in OBJECT_POINTERS {
        if !value
            .pointer(pointer)
            .is_some_and(serde_json::Value::is_array)
        {
            continue;
        }
        return Err(match pointer.strip_prefix('/') {
            Some(path) => SettingError::new(
                path.replace('/', "."),
                "invalid type: sequence, expected a JSON object",
            ),
            None => SettingError::new(origin, "invalid type: sequence, expected a JSON object"),
        });
    }
    Ok(())
}

/// At most this many problems are listed for one settings file.
const MAX_REPORTED_PROBLEMS: usize = 64;

/// Removes from `tree` the innermost object key on `path` (a whole list when
/// the problem is one of its elements, so later indexes stay as written); false
/// when there is no such key (so nothing could be removed).
fn remove_at(tree: &mut serde_json::Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some(cut) = segments
        .iter()
        .rposition(|s| matches!(s, Segment::Map { .. }))
    else {
        return false;
    };
    let mut node = tree;
    for segment in &segments[..cut] {
        let child = match (segment, node) {
            (Segment::Map { key }, serde_json::Value::Object(map)) => map.get_mut(key.as_str()),
            (Segment::Seq { index }, serde_json::Value::Array(items)) => items.get_mut(*index),
            _ => None,
        };
        match child {
            Some(child) => node = child,
            None => return false,
        }
    }
    match (segments[cut], node) {
        (Segment::Map { key }, serde_json::Value::Object(map)) => {
            map.remove(key.as_str()).is_some()
        }
        _ => false,
    }
}

/// Turns a serde error into a [`SettingError`] naming the key (or, for text that
/// is not JSON, the origin with line and column).
fn describe_parse_error(path: &str, error: &serde_json::Error, origin: &str) -> SettingError {
    let message = strip_position(error);
    match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            SettingError::new(
                origin,
                format!(
                    "malformed JSON at line {}, column {}: {message}",
                    error.line(),
                    error.column()
                ),
            )
        }
        serde_json::error::Category::Io => {
            SettingError::new(origin, format!("cannot read config: {message}"))
        }
        serde_json::error::Category::Data => {
            if path == "." || path.is_empty() {
                // The document itself is not an object.
                return SettingError::new(origin, message);
            }
            // serde echoes the offending value ("invalid type: integer `1234`"):
            // never echo one given for a secret key.
            let last = path.rsplit('.').next().unwrap_or(path);
            if last == "password" || last == "jwt_secret" {
                return SettingError::new(
                    path,
                    "invalid value (not shown, it is a secret); expected a string or null",
                );
            }
            SettingError::new(path, message)
        }
    }
}

/// serde_json appends " at line L column C" to its messages; key paths say
/// more to the user, so the position is dropped (or reworded for syntax errors).
fn strip_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(stripped) => stripped.to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::testing::parse;

    #[test]
    fn seed_000_block_is_accepted() {
        let text = r#"{"server":{"websocket":{"host":"localhost","port":8080,"auth":{"allowed_ip":"127.0.0.1","password":"MineAcademy"}}}}"#;
        let settings = parse(text).unwrap();
        assert_eq!(
            settings.server.websocket.auth.password.as_deref(),
            Some("MineAcademy")
        );
        assert_eq!(settings.server.websocket.auth.allowed_ip, "127.0.0.1");
        assert_eq!(
            settings.server.websocket.auth.password_permissions,
            vec!["admin"]
        );
        assert_eq!(settings.validate(), Ok(()));
    }

    #[test]
    fn unknown_key_names_its_path() {
        let errors = parse(r#"{"limits":{"max_conections":5}}"#).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        let line = errors.to_string();
        assert!(
            line.starts_with("limits.max_conections: unknown field"),
            "{line}"
        );

        let errors = parse(r#"{"server":{"websocket":{"auth":{"pasword":"x"}}}}"#).unwrap_err();
        assert_eq!(errors.0[0].key, "server.websocket.auth.pasword");

        // SPEC §13: a key outside tether's objects is a bot's own: ignored.
        let settings = parse(r#"{"nope":1}"#).unwrap();
        assert_eq!(settings.ignored_keys, ["nope"]);
    }

    #[test]
    fn wrong_type_names_its_path() {
        let errors = parse(r#"{"server":{"websocket":{"port":"80"}}}"#).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "server.websocket.port: invalid type: string \"80\", expected u16"
        );
        let errors = parse(r#"{"server":{"websocket":{"port":70000}}}"#).unwrap_err();
        assert_eq!(errors.0[0].key, "server.websocket.port");
        let errors = parse(r#"{"server":{"websocket":{"auth":{"password_permissions":["a",3]}}}}"#)
            .unwrap_err();
        assert_eq!(
            errors.0[0].key,
            "server.websocket.auth.password_permissions[1]"
        );
        let errors = parse("[]").unwrap_err();
        assert_eq!(errors.0[0].key, "test.json");
        let errors = parse(r#"{"server":{"health":["0.0.0.0",80]}}"#).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "server.health: invalid type: sequence, expected a JSON object"
        );
        let errors = parse(r#"{"log":null}"#).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "log: invalid type: null, expected a JSON object"
        );
        let errors = parse(r#"{"limits":{"idle_timeout_s":5,"idle_timeout_s":6}}"#).unwrap_err();
        assert_eq!(errors.0[0].key, "limits");
        assert!(errors.to_string().contains("duplicate field"), "{errors}");
    }

    #[test]
    fn secret_of_wrong_type_is_not_echoed() {
        let errors =
            parse(r#"{"server":{"websocket":{"auth":{"password":987654321}}}}"#).unwrap_err();
        assert_eq!(errors.0[0].key, "server.websocket.auth.password");
        assert!(!errors.to_string().contains("987654321"), "{errors}");
    }

    #[test]
    fn malformed_json_gives_line_and_column() {
        let errors = parse("{\n  \"limits\": {\n    \"max_connections\": 5,\n  }\n}").unwrap_err();
        let text = errors.to_string();
        assert!(
            text.starts_with("test.json: malformed JSON at line 4, column 3"),
            "{text}"
        );
        let errors = parse("{} trailing").unwrap_err();
        assert!(
            errors.to_string().contains("malformed JSON at line 1"),
            "{errors}"
        );
        let errors = parse("").unwrap_err();
        assert!(errors.to_string().contains("malformed JSON"), "{errors}");
    }
}
