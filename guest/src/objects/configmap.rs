//! The ConfigMap `<name>-config` holding the server's `config.yaml`.

use serde_json::{Value, json};

use crate::input::Primary;
use crate::names::{self, CONFIG_FILE_KEY};

/// The ConfigMap holding `config_yaml` (which never holds a secret).
pub fn build(owner: &Primary, config_yaml: String) -> Value {
    let mut config_map = json!({"apiVersion": "v1", "kind": "ConfigMap"});
    config_map["metadata"] = owner.metadata(&names::config_map(&owner.name));
    config_map["data"][CONFIG_FILE_KEY] = config_yaml.into();
    config_map
}
