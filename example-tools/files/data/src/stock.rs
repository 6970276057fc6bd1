//! Stock levels, reservations and the low-stock rule.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockError {
    UnknownItem(String),
    InsufficientStock { requested: u32, available: u32 },
}

pub struct Inventory {
    levels: HashMap<String, u32>,
    reserved: HashMap<String, u32>,
    threshold: u32,
}

impl Inventory {
    pub fn open(_db: &str, threshold: u32) -> Result<Self, String> {
        Ok(Inventory { levels: HashMap::new(), reserved: HashMap::new(), threshold })
    }

    /// Units on the shelf that no order has reserved yet.
    pub fn available(&self, sku: &str) -> Result<u32, StockError> {
        let level = *self.levels.get(sku).ok_or_else(|| StockError::UnknownItem(sku.into()))?;
        Ok(level - self.reserved.get(sku).copied().unwrap_or(0))
    }

    pub fn reserve(&mut self, sku: &str, quantity: u32) -> Result<(), StockError> {
        let available = self.available(sku)?;
        if quantity > available {
            return Err(StockError::InsufficientStock { requested: quantity, available });
        }
        *self.reserved.entry(sku.into()).or_default() += quantity;
        Ok(())
    }

    pub fn restock(&mut self, sku: &str, quantity: u32) {
        *self.levels.entry(sku.into()).or_default() += quantity;
    }

    /// TODO: per-item thresholds (see notes.txt, item 1).
    pub fn is_low(&self, sku: &str) -> bool {
        self.available(sku).map(|n| n <= self.threshold).unwrap_or(false)
    }
}
