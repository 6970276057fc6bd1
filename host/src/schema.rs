//! JSON Schema checks of tool arguments (before the guest runs) and of
//! structured results (after). Schemas are compiled once, at load time.
//! Remote `$ref`s are never fetched.

use serde_json::Value;

/// A compiled schema.
pub struct Schema {
    validator: jsonschema::Validator,
}

impl Schema {
    pub fn compile(schema: &serde_json::Map<String, Value>) -> Result<Schema, String> {
        let v = Value::Object(schema.clone());
        jsonschema::validator_for(&v)
            .map(|validator| Schema { validator })
            .map_err(|e| format!("schema does not compile: {e}"))
    }

    /// `Ok` or every violation, each with the JSON pointer to the offending value.
    pub fn check(&self, instance: &Value) -> Result<(), String> {
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
