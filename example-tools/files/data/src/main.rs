//! inventory-service: the HTTP entry point.

mod stock;

use std::env;
use std::net::SocketAddr;

use stock::Inventory;

const DEFAULT_ADDR: &str = "127.0.0.1:8080";
const DEFAULT_THRESHOLD: u32 = 5;

fn main() {
    let addr: SocketAddr = env::var("INVENTORY_ADDR")
        .unwrap_or_else(|_| DEFAULT_ADDR.to_string())
        .parse()
        .expect("INVENTORY_ADDR must be host:port");
    let threshold = env::var("LOW_STOCK_THRESHOLD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_THRESHOLD);
    let db = env::var("INVENTORY_DB").unwrap_or_else(|_| "inventory.sqlite3".into());

    let inventory = Inventory::open(&db, threshold).expect("open the database");
    println!("inventory-service listening on {addr} (low-stock threshold {threshold})");
    serve(addr, inventory);
}

fn serve(addr: SocketAddr, inventory: Inventory) {
    // Routing is elided in this sample; see the API table in README.md.
    let _ = (addr, inventory);
}
