//! Test fixture: a component whose `describe` never returns.
//!
//! Every export of a guest-SDK component asks for its toolbox first, and
//! this one's toolbox never comes: `describe` spins at load, so the host
//! must give up on it within its describe deadline, on a thread that does
//! not serve requests, while every other component loads and serves.

use toolhost_guest::Toolbox;

/// Spins forever.
pub fn tools() -> Toolbox {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

toolhost_guest::export!(tools);
