//! The JSON shapes of keys and values, shared by the CLI's `--json` and the HTTP API: bytes
//! that are UTF-8 as a string field, any others as `<name>_base64`.

use base64::prelude::{Engine as _, BASE64_STANDARD};

/// Sets field `name` of `object` to `bytes`: as text if UTF-8, else `<name>_base64`.
pub fn bytes_field(object: &mut serde_json::Value, name: &str, bytes: &[u8]) {
    let (field, value) = match std::str::from_utf8(bytes) {
        Ok(text) => (name.to_string(), serde_json::json!(text)),
        Err(_) => (
            format!("{name}_base64"),
            serde_json::json!(BASE64_STANDARD.encode(bytes)),
        ),
    };
    object[field] = value;
}

/// `fields` with the key added (as `"key"`, or `"key_base64"` for a key that is not UTF-8).
pub fn keyed(key: &[u8], mut fields: serde_json::Value) -> serde_json::Value {
    bytes_field(&mut fields, "key", key);
    fields
}

/// A listing's page: `{"items": [{"key" (or "key_base64"), "value" (or "value_base64"),
/// "version"}, ...], "next": KEY or null}` (`"next_base64"` for a key that is not UTF-8).
pub fn page_json(page: &crate::messages::ListPage) -> serde_json::Value {
    let items: Vec<serde_json::Value> = page
        .items
        .iter()
        .map(|item| {
            let mut object = keyed(&item.key, serde_json::json!({"version": item.version}));
            if let Some(value) = &item.value {
                bytes_field(&mut object, "value", value);
            }
            object
        })
        .collect();
    let mut object = serde_json::json!({"items": items, "next": null});
    if let Some(next) = &page.next {
        object.as_object_mut().expect("an object").remove("next");
        bytes_field(&mut object, "next", next);
    }
    object
}

/// A watch's item as `paxkv watch --json` prints it: `{"key", "version", "value"}` (`null`
/// for a delete) or `{"key", "skipped_to"}`.
pub fn watch_item_json(item: &crate::watch::WatchItem) -> serde_json::Value {
    use crate::watch::WatchItem;
    match item {
        WatchItem::Change {
            key,
            version,
            value,
        } => {
            let mut object = keyed(key, serde_json::json!({}));
            object["version"] = serde_json::json!(version);
            match value {
                Some(value) => bytes_field(&mut object, "value", value),
                None => object["value"] = serde_json::Value::Null,
            }
            object
        }
        WatchItem::Skipped { key, skipped_to } => {
            let mut object = keyed(key, serde_json::json!({}));
            object["skipped_to"] = serde_json::json!(skipped_to);
            object
        }
    }
}

/// A membership as `paxkv member list --json` prints it: `{"epoch", "members": [{"id",
/// "addr", "state"}, ...]}`.
/// A lease as `paxkv lease show --json` prints it.
pub fn lease_json(lease: &crate::messages::LeaseInfo) -> serde_json::Value {
    serde_json::json!({
        "id": crate::paxos::lease::format_id(lease.id),
        "ttl_s": lease.ttl_ms / 1000,
        "version": lease.version,
        "remaining_ms": lease.remaining_ms,
    })
}

/// A lease's keys: `[{"key": ...}, ...]` (`"key_base64"` for a key that is not UTF-8).
pub fn lease_keys_json(keys: &[Vec<u8>]) -> serde_json::Value {
    serde_json::Value::Array(
        keys.iter()
            .map(|key| keyed(key, serde_json::json!({})))
            .collect(),
    )
}

pub fn membership_json(m: &crate::paxos::membership::Membership) -> serde_json::Value {
    serde_json::json!({
        "epoch": m.epoch,
        "members": m.members.iter().map(|x| serde_json::json!({
            "id": x.id,
            "addr": x.addr,
            "state": x.state.as_str(),
        })).collect::<Vec<_>>(),
    })
}
