//! `rooms.by_path` (SPEC §13): request path templates such as
//! `/ws/projects/{id}/` and the rooms a client connected on a matching path
//! joins when it authenticates (`project_{id}`, and `{sub}` as in `by_role`).

use crate::proto::rooms::MAX_ROOM_NAME;
use std::collections::BTreeMap;

/// Marker left in a room name until the session's `sub` is known.
pub const SUB: &str = "{sub}";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Var(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    segments: Vec<Segment>,
    rooms: Vec<String>,
}

/// Every `by_path` template, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathRooms {
    templates: Vec<Template>,
}

/// The path's segments; one trailing `/` is optional (`/ws/x/` is `/ws/x`).
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    path.split('/')
}

fn parse_template(template: &str) -> Result<Vec<Segment>, String> {
    if !template.starts_with('/') {
        return Err("must start with `/`, like \"/ws/projects/{id}/\"".into());
    }
    let mut names: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for segment in segments(template) {
        let var = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
        match var {
            Some(name) if is_name(name) && name != "sub" => {
                if names.contains(&name) {
                    return Err(format!("names `{{{name}}}` twice"));
                }
                names.push(name);
                out.push(Segment::Var(name.to_string()));
            }
            Some(_) => {
                return Err(format!(
                    "`{segment}` is not a variable: use `{{name}}` with letters, digits \
                     or `_` (and not `{{sub}}`, which is the token's subject)"
                ))
            }
            None if segment.contains(['{', '}']) => {
                return Err(format!(
                    "`{segment}`: a variable must be a whole path segment"
                ))
            }
            None => out.push(Segment::Literal(segment.to_string())),
        }
    }
    Ok(out)
}

fn is_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The `{name}`s a room name uses.
fn room_vars(room: &str) -> impl Iterator<Item = &str> {
    room.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

impl PathRooms {
    /// Parses `by_path`; the first problem names its template (and the room).
    pub fn new(by_path: &BTreeMap<String, Vec<String>>) -> Result<PathRooms, (String, String)> {
        let mut templates = Vec::with_capacity(by_path.len());
        for (template, rooms) in by_path {
            let problem = |reason: String| (template.clone(), reason);
            let segments = parse_template(template).map_err(problem)?;
            for room in rooms {
                if room.trim().is_empty() {
                    return Err(problem("room names must not be empty".into()));
                }
                for var in room_vars(room) {
                    let known = var == "sub" || segments.contains(&Segment::Var(var.to_string()));
                    if !known {
                        return Err(problem(format!(
                            "room `{room}` uses `{{{var}}}`, which the path does not name"
                        )));
                    }
                }
            }
            templates.push(Template {
                segments,
                rooms: rooms.clone(),
            });
        }
        Ok(PathRooms { templates })
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The rooms of every template `path` (without its query) matches, with
    /// the path's values filled in and `{sub}` left for [`with_sub`]. A name
    /// the path makes longer than a room name may be is left out.
    pub fn rooms_for(&self, path: &str) -> Vec<Box<str>> {
        let mut rooms: Vec<Box<str>> = Vec::new();
        for template in &self.templates {
            let Some(values) = capture(&template.segments, path) else {
                continue;
            };
            for room in &template.rooms {
                let mut name = room.clone();
                for (var, value) in &values {
                    name = name.replace(&format!("{{{var}}}"), value);
                }
                if name.len() <= MAX_ROOM_NAME && !rooms.iter().any(|r| **r == *name) {
                    rooms.push(name.into());
                }
            }
        }
        rooms
    }
}

/// The values of the template's variables when `path` matches it. A value
/// never holds `{` or `}`, so filling it in cannot make a `{sub}`.
fn capture<'a>(template: &'a [Segment], path: &'a str) -> Option<Vec<(&'a str, &'a str)>> {
    let mut values = Vec::new();
    let mut given = segments(path);
    for segment in template {
        let part = given.next()?;
        match segment {
            Segment::Literal(text) if text == part => {}
            Segment::Var(name) if !part.is_empty() && !part.contains(['{', '}']) => {
                values.push((name.as_str(), part));
            }
            _ => return None,
        }
    }
    given.next().is_none().then_some(values)
}

/// A path room for the session of `sub`.
pub fn with_sub(room: &str, sub: &str) -> String {
    room.replace(SUB, sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(pairs: &[(&str, &[&str])]) -> Result<PathRooms, (String, String)> {
        let map = pairs
            .iter()
            .map(|(t, r)| (t.to_string(), r.iter().map(|s| s.to_string()).collect()))
            .collect();
        PathRooms::new(&map)
    }

    #[test]
    fn matches_one_segment_per_variable() {
        let by_path = rooms(&[
            ("/ws/projects/{id}/", &["project_{id}", "user_{sub}"]),
            ("/ws/collaboration/{room_name}/", &["collab_{room_name}"]),
        ])
        .unwrap();
        let got = by_path.rooms_for("/ws/projects/42/");
        assert_eq!(
            got,
            vec!["project_42".into(), "user_{sub}".into()] as Vec<Box<str>>
        );
        assert_eq!(
            by_path.rooms_for("/ws/projects/42"),
            got,
            "trailing / optional"
        );
        assert!(by_path.rooms_for("/ws/projects/").is_empty());
        assert!(by_path.rooms_for("/ws/projects/4/2/").is_empty());
        assert!(by_path.rooms_for("/ws/projects/{sub}/").is_empty());
        assert!(by_path.rooms_for("/").is_empty());
        assert_eq!(
            by_path.rooms_for("/ws/collaboration/design/"),
            vec!["collab_design".into()] as Vec<Box<str>>
        );
        assert_eq!(with_sub("user_{sub}", "7"), "user_7");
        let long = format!("/ws/projects/{}/", "9".repeat(300));
        assert_eq!(
            by_path.rooms_for(&long),
            vec!["user_{sub}".into()] as Vec<Box<str>>
        );
    }

    #[test]
    fn bad_templates_are_named() {
        for (template, room) in [
            ("ws/{id}/", "r"),
            ("/ws/x{id}/", "r"),
            ("/ws/{}/", "r"),
            ("/ws/{sub}/", "r"),
            ("/ws/{a}/{a}/", "r"),
            ("/ws/{id}/", "r_{other}"),
            ("/ws/{id}/", " "),
        ] {
            let err = rooms(&[(template, &[room])]).unwrap_err();
            assert_eq!(err.0, template);
        }
        assert!(rooms(&[("/ws/", &["lobby_{sub}"])]).is_ok());
    }
}
