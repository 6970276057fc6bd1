//! JSON Schema checks of tool arguments (before the guest runs) and of
//! structured results (after). Schemas are compiled once, at load time.
//! Remote `$ref`s are never fetched.

use serde_json::Value;
use std::sync::Arc;

/// A check of arguments that replaces the schema's own (`Ok` or the
/// errors, each naming its JSON pointer).
pub type Check = Arc<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

/// A compiled schema.
pub struct Schema {
    validator: jsonschema::Validator,
    check: Option<Check>,
}

impl Schema {
    pub fn compile(schema: &serde_json::Map<String, Value>) -> Result<Schema, String> {
        let v = Value::Object(schema.clone());
        jsonschema::validator_for(&v)
            .map(|validator| Schema {
                validator,
                check: None,
            })
            .map_err(|e| format!("schema does not compile: {e}"))
    }

    /// Check instances with `check` instead of the schema: typed-WIT tools
    /// convert their arguments exactly as the call will, with more precise
    /// errors than a schema validator can give (see `typed`).
    pub fn with_check(mut self, check: Check) -> Schema {
        self.check = Some(check);
        self
    }

    /// `Ok` or every violation, each with the JSON pointer to the offending value.
    pub fn check(&self, instance: &Value) -> Result<(), String> {
        if let Some(check) = &self.check {
            return check(instance);
        }
        if self.validator.is_valid(instance) {
            return Ok(());
        }
        let errors: Vec<String> = self
            .validator
            .iter_errors(instance)
            .take(8)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("at `{at}`: {e}")
                }
            })
            .collect();
        Err(errors.join("; "))
    }
}
