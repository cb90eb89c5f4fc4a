//! Which changes of a primary trigger a reconcile.
//!
//! Every change does, but one: an update that changed nothing but the primary's
//! `status` (and with it `resourceVersion` and `managedFields`), written last by the
//! host's own field manager. That is the echo of the host's own `patchStatus`; a
//! reconcile for it would only find what the module just wrote, and a module whose
//! status changes with its input would otherwise write in a loop at API-server speed.
//!
//! Guarantees:
//! - a change to `spec`, labels, annotations, finalizers, owner references,
//!   `deletionTimestamp` or any other field still triggers, whoever made it;
//! - a status change made by anyone else (another manager's status entry is as recent
//!   as the host's) still triggers;
//! - an object without the host's status entry always triggers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::api::DynamicObject;

/// Whether `current` (as the watch delivered it, before any stripping) is only the
/// host's own status write over `previous` (as cached): then it does not trigger.
pub fn is_own_status_echo(previous: &DynamicObject, current: &DynamicObject, field_manager: &str) -> bool {
    wrote_status_last(current, field_manager) && same_but_status(previous, current)
}

/// Whether the field manager's entry for the status subresource is newer than every
/// other manager's status entry: the last status write was the host's.
///
/// Entries of the main resource do not matter: a write there cannot change `status`,
/// and whatever it did change fails [`same_but_status`].
fn wrote_status_last(object: &DynamicObject, field_manager: &str) -> bool {
    let entries = object.metadata.managed_fields.as_deref().unwrap_or_default();
    let status_entries = entries.iter().filter(|entry| entry.subresource.as_deref() == Some("status"));
    let is_ours = |entry: &&ManagedFieldsEntry| entry.manager.as_deref() == Some(field_manager);
    let Some(ours) = status_entries.clone().find(is_ours).and_then(|entry| entry.time.as_ref()) else {
        return false;
    };
    // Entries carry whole seconds: another status write in the same second may hide
    // behind ours, so a tie triggers.
    status_entries.filter(|entry| !is_ours(entry)).all(|entry| entry.time.as_ref().is_none_or(|t| t < ours))
}

/// Whether the two objects are equal but for `status`, `resourceVersion` and
/// `managedFields`.
fn same_but_status(a: &DynamicObject, b: &DynamicObject) -> bool {
    let metadata = |object: &DynamicObject| ObjectMeta {
        resource_version: None,
        managed_fields: None,
        ..object.metadata.clone()
    };
    fn data(object: &DynamicObject) -> Vec<(&String, &serde_json::Value)> {
        let fields = object.data.as_object().into_iter().flatten();
        fields.filter(|(key, _)| key.as_str() != "status").collect()
    }
    a.types == b.types
        && a.data.is_object() == b.data.is_object()
        && metadata(a) == metadata(b)
        && data(a) == data(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HOST: &str = "dittofs-operator";

    fn entry(manager: &str, subresource: Option<&str>, time: &str) -> serde_json::Value {
        let mut entry = json!({"manager": manager, "operation": "Update", "time": time,
            "apiVersion": "dittofs.dittofs.com/v1alpha1", "fieldsType": "FieldsV1", "fieldsV1": {}});
        if let Some(subresource) = subresource {
            entry["subresource"] = subresource.into();
        }
        entry
    }

    fn server(rv: &str, managed: Vec<serde_json::Value>, status: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
            "metadata": {"name": "nas", "namespace": "files", "uid": "u-1", "generation": 2,
                "resourceVersion": rv, "labels": {"team": "a"}, "finalizers": ["dittofs.dittofs.com/finalizer"],
                "managedFields": managed},
            "spec": {"replicas": 1},
            "status": status,
        }))
        .expect("a DittoServer")
    }

    fn before() -> DynamicObject {
        server("10", vec![entry("kubectl", None, "2026-12-02T10:00:00Z")], json!({"phase": "Pending"}))
    }

    fn echo() -> DynamicObject {
        server(
            "11",
            vec![
                entry("kubectl", None, "2026-12-02T10:00:00Z"),
                entry(HOST, Some("status"), "2026-12-02T10:00:05Z"),
            ],
            json!({"phase": "Running"}),
        )
    }

    #[test]
    fn the_hosts_own_status_write_does_not_trigger() {
        assert!(is_own_status_echo(&before(), &echo(), HOST));
    }

    #[test]
    fn any_other_change_with_it_triggers() {
        type Change = fn(&mut DynamicObject);
        let changes: [(&str, Change); 7] = [
            ("spec", |o| o.data["spec"]["replicas"] = 2.into()),
            ("labels", |o| {
                o.metadata.labels.get_or_insert_default().insert("team".into(), "b".into());
            }),
            ("annotations", |o| {
                o.metadata.annotations.get_or_insert_default().insert("note".into(), "x".into());
            }),
            ("finalizers", |o| o.metadata.finalizers = None),
            ("generation", |o| o.metadata.generation = Some(3)),
            ("deletionTimestamp", |o| {
                o.metadata.deletion_timestamp = before_time();
            }),
            ("a new top-level field", |o| o.data["extra"] = json!({"a": 1})),
        ];
        for (what, change) in changes {
            let mut current = echo();
            change(&mut current);
            assert!(!is_own_status_echo(&before(), &current, HOST), "{what} changed: must trigger");
        }
    }

    fn before_time() -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
        serde_json::from_value(json!("2026-12-02T10:00:06Z")).ok()
    }

    #[test]
    fn a_status_write_by_anyone_else_triggers() {
        let current = server(
            "11",
            vec![
                entry(HOST, Some("status"), "2026-12-02T10:00:05Z"),
                entry("kubectl", Some("status"), "2026-12-02T10:00:07Z"),
            ],
            json!({"phase": "Running"}),
        );
        assert!(!is_own_status_echo(&before(), &current, HOST));
        // The same second as the host's: it may be the newer one, so it triggers.
        let tie = server(
            "11",
            vec![
                entry(HOST, Some("status"), "2026-12-02T10:00:05Z"),
                entry("other", Some("status"), "2026-12-02T10:00:05Z"),
            ],
            json!({"phase": "Running"}),
        );
        assert!(!is_own_status_echo(&before(), &tie, HOST));
    }

    #[test]
    fn a_main_resource_write_in_the_same_second_does_not_matter() {
        // The user created the object and the host wrote its status within one second:
        // the user's entry cannot have changed the status.
        let current = server(
            "11",
            vec![
                entry("kubectl", None, "2026-12-02T10:00:05Z"),
                entry(HOST, Some("status"), "2026-12-02T10:00:05Z"),
            ],
            json!({"phase": "Running"}),
        );
        assert!(is_own_status_echo(&before(), &current, HOST));
    }

    #[test]
    fn without_the_hosts_status_entry_it_triggers() {
        let by_others = server(
            "11",
            vec![entry("someone", Some("status"), "2026-12-02T10:00:05Z")],
            json!({"phase": "Running"}),
        );
        assert!(!is_own_status_echo(&before(), &by_others, HOST));
        // The host's entry for the main resource (an apply), not for status.
        let main = server("11", vec![entry(HOST, None, "2026-12-02T10:00:05Z")], json!({"phase": "Running"}));
        assert!(!is_own_status_echo(&before(), &main, HOST));
        let mut no_fields = echo();
        no_fields.metadata.managed_fields = None;
        assert!(!is_own_status_echo(&before(), &no_fields, HOST));
    }
}
