//! The ConfigMap `<name>-config` holding the server's `config.yaml`.

use super::model::{ConfigData, ConfigMap};
use crate::input::Primary;
use crate::names;

/// The ConfigMap holding `config_yaml` (which never holds a secret).
pub fn build<'a>(owner: &'a Primary, config_yaml: String) -> ConfigMap<'a> {
    ConfigMap {
        api_version: "v1",
        kind: "ConfigMap",
        metadata: owner.metadata(names::config_map(&owner.name)),
        data: ConfigData { config: config_yaml },
    }
}
