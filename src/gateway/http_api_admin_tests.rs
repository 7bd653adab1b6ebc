//! Unit tests of the dashboard's endpoints (SPEC §14): `/api/rooms` and
//! `/api/kick`, with the helpers of `http_api`'s own tests.

use super::is_endpoint;
use super::tests::{call, hub, open_client, token};
use crate::proto::hub::Action;
use serde_json::json;

#[test]
fn kick_needs_an_admin_token_and_a_client() {
    let mut h = hub();
    let c0 = open_client(&mut h, 0, &[]);
    let body = format!(r#"{{"client":"{c0:x}"}}"#);
    let user = token(&["host", "publish"], &[]);
    assert_eq!(call(&mut h, "POST", "/api/kick", Some(&user), &body).0, 401);
    let admin = token(&["admin"], &[]);
    assert_eq!(call(&mut h, "POST", "/api/kick", Some(&admin), "{}").0, 400);
    let (status, reply) = call(&mut h, "POST", "/api/kick", Some(&admin), &body);
    assert_eq!((status, reply), (200, json!({"delivered": 1})));
    assert!(matches!(
        h.out.actions.last(),
        Some(Action::Close { code: 4010, .. })
    ));
    let again = call(&mut h, "POST", "/api/kick", Some(&admin), &body);
    assert_eq!(again, (200, json!({"delivered": 0})));
    assert_eq!(call(&mut h, "GET", "/api/kick", Some(&admin), "").0, 405);
}

#[test]
fn rooms_need_an_admin_token() {
    let mut h = hub();
    open_client(&mut h, 0, &["red"]);
    assert_eq!(call(&mut h, "GET", "/api/rooms", None, "").0, 401);
    let user = token(&["publish"], &[]);
    assert_eq!(call(&mut h, "GET", "/api/rooms", Some(&user), "").0, 401);
    let admin = token(&["admin"], &[]);
    let (status, body) = call(&mut h, "GET", "/api/rooms", Some(&admin), "");
    assert_eq!(status, 200);
    assert_eq!(body["rooms"], json!([{"room": "red", "members": 1}]));
    assert_eq!(call(&mut h, "POST", "/api/rooms", Some(&admin), "").0, 405);
    assert!(is_endpoint("/api/rooms"));
    // The page is not on a shared port, where other plain requests get 426.
    assert!(!is_endpoint("/"));
}
