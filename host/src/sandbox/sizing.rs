//! How big the sandbox pool is: the slots calls may hold (`max-instances`,
//! or, by default, the most this host affords), the slots beside them
//! (the describe reserve, the sharding slack), the linear memories, tables
//! and fiber stacks wasmtime's pooling allocator reserves for them, and the
//! most it may keep resident between calls; and what the live pools of the
//! process claimed of the host, so that each is sized to what is left.
//!
//! One set of functions for the engine's pool, the permits that hand it
//! out and the bound reported as `toolhost_memory_residue_max_bytes`, so
//! that the three can never disagree. Must not touch: the engine itself,
//! or how a call takes a slot (`Pools`, in the parent module).

use crate::config::EngineConfig;

/// Slots each of wasmtime's pools (instances, memories, tables, stacks)
/// holds beyond what our permits can ever hand out. wasmtime shards a pool
/// of 128 or more slots (one shard per CPU, at most 16) and an allocation
/// probes the shards one at a time, each under its own lock: with the pool
/// nearly full and slots freed and taken while it probes, it can find
/// every shard full although a slot is free, and the call fails with
/// "maximum concurrent limit ... reached" (seen once in the sandbox bench).
/// One spare slot per possible shard makes that need 16 such moves within
/// one probe. The cost is address space, not memory.
pub(super) const POOL_SLACK: u32 = 16;

/// Sandboxes the pool holds: `max-instances`, the describe reserve
/// ([`describe_reserve`]) and [`POOL_SLACK`]. One computation, for the
/// engine and for what it may keep resident.
pub(super) fn pool_slots(config: &EngineConfig) -> u32 {
    config
        .max_instances
        .saturating_add(describe_reserve(config))
        .saturating_add(POOL_SLACK)
}

/// Linear memories the permits of `slots` sandboxes hand out: one each,
/// and a second for up to [`TWO_MEMORY_SLOTS`] of them. Most components
/// have one memory (a Rust `wasm32-wasip2` tool has one); one built with
/// the WASI preview 1 adapter has two. Calls of such components beyond
/// that wait for memory permits, as any call waits for a slot. Each memory
/// reserves 4 GiB of address space and, while in use, four mappings (six
/// counted, see `pool_mappings`),
/// so on a pool of thousands a second memory per slot would halve what
/// the host affords (see [`auto_instances`]); up to 256 slots it is two
/// per slot, as before.
pub(super) fn memories_for(slots: u32) -> u32 {
    slots.saturating_add(slots.min(TWO_MEMORY_SLOTS))
}

/// See [`memories_for`].
const TWO_MEMORY_SLOTS: u32 = 256;

/// Tables the permits of `slots` sandboxes hand out.
pub(super) fn tables_for(slots: u32) -> u32 {
    slots.saturating_mul(TABLES_PER_SLOT)
}

/// The pool's linear memories: those of the calls' permits, of the
/// describe reserve's, and two per spare slot.
pub(super) fn pool_memories(config: &EngineConfig) -> u32 {
    memories_for(config.max_instances)
        .saturating_add(memories_for(describe_reserve(config)))
        .saturating_add(POOL_SLACK * 2)
}

/// The pool's tables (see [`pool_memories`]).
pub(super) fn pool_tables(config: &EngineConfig) -> u32 {
    tables_for(pool_slots(config))
}

/// Each call's fiber stack: the guest's `max-wasm-stack` and a MiB for
/// the host functions it calls.
pub(super) fn async_stack_size(config: &EngineConfig) -> usize {
    config.max_wasm_stack + (1 << 20)
}

/// What the pool's sandboxes may hold outside `max-memory`, at most:
/// - in slots no call holds: each linear memory's `memory-keep-resident`
///   bytes of dirty pages, reset in place rather than unmapped (see
///   `engine`), and as much again for the page tables that map them
///   (wasmtime's pagemap reset keeps dirty pages wherever they are in the
///   4 GiB slot; one page per 2 MiB needs a page-table page each, found by
///   review); 16 KiB of each table;
/// - in every slot, held or not: its whole fiber stack (wasmtime zeroes
///   and decommits a returned stack only with `async_stack_zeroing`, which
///   is off, so a guest that once recursed deep leaves its stack's pages
///   resident; and a running call's stack is not charged), and its
///   instance's `VMContext`, allocated per instantiation on the heap, at
///   most [`INSTANCE_BYTES`] (found by review).
///
/// A running call's linear memories and tables are charged to
/// `max-memory`. This is not (no call holds it, and wasmtime does not say
/// which slots keep what); it is bounded here and reported
/// (`toolhost_memory_residue_max_bytes`).
pub(super) fn pool_residue(config: &EngineConfig) -> u64 {
    let memories = u64::from(pool_memories(config))
        .saturating_mul(config.memory_keep_resident as u64)
        .saturating_mul(2);
    let tables = u64::from(pool_tables(config)).saturating_mul(TABLE_KEEP_RESIDENT as u64);
    let per_slot = async_stack_size(config) as u64 + INSTANCE_BYTES as u64;
    let slots = u64::from(pool_slots(config)).saturating_mul(per_slot);
    memories.saturating_add(tables).saturating_add(slots)
}

/// The most a component instance's runtime state (its `VMComponentContext`
/// and its core instances' `VMContext`s together) may take: wasmtime's
/// default, set explicitly because the bound counts it. Measured: the
/// Python fixtures take 215 KiB, the JavaScript ones 400 KiB (most of it a
/// function reference per function); a component needing more fails to
/// load, with wasmtime's breakdown of what it needs.
pub(super) const INSTANCE_BYTES: usize = 1 << 20;

/// Tables the pool holds per sandbox slot, on average: a component may
/// use more, within the total.
const TABLES_PER_SLOT: u32 = 8;

/// The first bytes of each table slot kept resident between calls:
/// 2,048 function references, several times what a Rust tool's tables
/// hold (the hostile fixture's: 329 and 47). Past it, a table's pages are
/// decommitted between calls. Counted per table in [`pool_residue`], so it
/// is 128 KiB of every slot's bound (it was 64 KiB a table, 512 KiB a
/// slot, which on a pool of thousands is gigabytes of bound for pages no
/// tool uses).
pub(super) const TABLE_KEEP_RESIDENT: usize = 16 << 10;

/// The first bytes of each fiber stack wasmtime would keep resident if it
/// zeroed stacks (`async_stack_zeroing`, off: see [`pool_residue`]).
pub(super) const STACK_KEEP_RESIDENT: usize = 64 << 10;

/// How many components a load prepares at once (see
/// `Sandbox::load_parallelism`).
pub(super) fn load_parallelism(config: &EngineConfig) -> usize {
    let n = match config.load_parallelism {
        0 => crate::scheduler::cores(),
        n => n as usize,
    };
    n.min(config.max_instances as usize / 2).max(1)
}

/// Sandboxes the pool holds beside `max-instances`, for `describe` only:
/// a component a reload adds must describe itself before it can be
/// served, and under a pool full of calls (runaway ones, say) it would
/// wait past its deadline and drop out. Calls never take these. One per
/// component a load prepares at once, so that one slow `describe` (a
/// hostile one may take its whole timeout) does not make the others of
/// the same load wait past theirs.
pub(super) fn describe_reserve(config: &EngineConfig) -> u32 {
    load_parallelism(config) as u32
}

/// The most sandboxes `max-instances = 0` (the default) sizes the pool
/// for, on any host.
pub(crate) const AUTO_CEILING: u32 = 10_000;

/// The fewest: where even this does not fit (a host small for the
/// `max-memory` it gives calls, say), the pool is this size anyway, and a
/// warning says which bound it passes.
pub(crate) const AUTO_FLOOR: u32 = 16;

/// What the host has room for, read when the pool is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostRoom {
    /// Memory the process may use: physical, or its cgroup's limit.
    pub(crate) memory: u64,
    /// Memory mappings it may still create: `vm.max_map_count` less those
    /// it has.
    pub(crate) mappings: u64,
    /// Address space it has not reserved yet.
    pub(crate) address_space: u64,
}

impl HostRoom {
    /// This process's room now (Linux `/proc`); where a figure cannot be
    /// read, the kernel's default (65,530 mappings, 128 TiB of address
    /// space) or, for memory, 16 GiB.
    pub(crate) fn now() -> HostRoom {
        let claimed = *CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        HostRoom::given(claimed)
    }

    /// This process's room, with `claimed` taken by its live pools.
    fn given(claimed: Claimed) -> HostRoom {
        let maps_now = std::fs::read_to_string("/proc/self/maps")
            .map(|m| m.lines().count() as u64)
            .unwrap_or(0);
        let max_maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(65_530);
        let reserved = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmSize:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .map_or(0, |kib| kib << 10);
        HostRoom {
            memory: crate::config::host_memory()
                .unwrap_or(16 << 30)
                .saturating_sub(claimed.memory),
            mappings: max_maps.saturating_sub(maps_now.saturating_add(claimed.mappings)),
            address_space: address_space_limit().saturating_sub(reserved),
        }
    }
}

/// The address space a process may reserve: `RLIMIT_AS` if set, else the
/// 47 bits of x86-64 and aarch64 Linux.
fn address_space_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` to the pointer it is given,
    // which points at a live local.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0;
    if ok && limit.rlim_cur != libc::RLIM_INFINITY {
        limit.rlim_cur.min(USER_ADDRESS_SPACE)
    } else {
        USER_ADDRESS_SPACE
    }
}

/// What the live pools of this process claimed of the host: the memory
/// each may hold (its `max-memory` and residue) and the mappings it may
/// create, so that a second `Core` is sized to what the first leaves,
/// including what the first has not used yet (found by review: the
/// mappings a pool creates under load are not there when the next one
/// looks).
#[derive(Debug, Clone, Copy, Default)]
struct Claimed {
    memory: u64,
    mappings: u64,
}

static CLAIMED: std::sync::Mutex<Claimed> = std::sync::Mutex::new(Claimed {
    memory: 0,
    mappings: 0,
});

/// One pool's part of [`CLAIMED`], given back when it is dropped (with
/// the sandbox that owns the pool).
#[derive(Debug)]
pub(crate) struct Claim(Claimed);

impl Claim {
    /// `config` resolved for this host (its pool sized, see
    /// [`EngineConfig::pool_size`]), and what that pool may hold, claimed:
    /// sized and claimed under one lock, so that two cores built at once
    /// are not both sized against the whole host (found by review).
    pub(crate) fn resolve(config: &EngineConfig) -> (EngineConfig, Claim) {
        let mut all = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        let resolved = resolve_in(config, HostRoom::given(*all));
        let mine = Claimed {
            memory: resolved.max_memory.saturating_add(pool_residue(&resolved)),
            mappings: pool_mappings(&resolved),
        };
        all.memory = all.memory.saturating_add(mine.memory);
        all.mappings = all.mappings.saturating_add(mine.mappings);
        (resolved, Claim(mine))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut all = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        all.memory = all.memory.saturating_sub(self.0.memory);
        all.mappings = all.mappings.saturating_sub(self.0.mappings);
    }
}

/// A process's address space on x86-64 and aarch64 Linux (47 bits; the
/// kernel hands out more only to mappings that ask for it).
const USER_ADDRESS_SPACE: u64 = 1 << 47;

/// Which bound sized an automatic pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    /// [`AUTO_CEILING`].
    Ceiling,
    /// What the pool may hold outside `max-memory` ([`pool_residue`]) must
    /// fit in what three quarters of the host's memory leave beside it.
    Memory,
    /// Its mappings, every memory in use, in half the mappings left.
    Mappings,
    /// Its reservations in half the address space left.
    AddressSpace,
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bound::Ceiling => "the ceiling of 10,000",
            Bound::Memory => {
                "memory: what the pool may hold beside max-memory fits in three quarters of the host's"
            }
            Bound::Mappings => "mappings: half of those vm.max_map_count leaves",
            Bound::AddressSpace => "address space: half of what is left",
        })
    }
}

/// Mappings a pool of `config`'s size may create, at most: each fiber
/// stack and its guard page (two, from the start), and each linear memory
/// in use split into four (the pages before its data image, the image,
/// the pages after, and the rest of its reservation; measured in the
/// in-flight bench), counted as six: a slot reused by another component
/// has its old image mapped over, and the pieces need not merge (review).
fn pool_mappings(config: &EngineConfig) -> u64 {
    u64::from(pool_slots(config)) * 2 + u64::from(pool_memories(config)) * 6
}

/// Elements a table of the pool holds at most (wasmtime's default, set
/// explicitly because the bound counts it).
pub(super) const TABLE_ELEMENTS: usize = 20_000;

/// Address space a pool of `config`'s size reserves: each linear memory's
/// 4 GiB and the guard regions on both sides of it (32 MiB each), each
/// stack, and each table ([`TABLE_ELEMENTS`] of 8 bytes, in pages).
fn pool_address_space(config: &EngineConfig) -> u64 {
    let memory = (4u64 << 30) + (64 << 20);
    let table = ((TABLE_ELEMENTS * 8).div_ceil(4096) * 4096) as u64;
    u64::from(pool_memories(config))
        .saturating_mul(memory)
        .saturating_add(
            u64::from(pool_slots(config)).saturating_mul(async_stack_size(config) as u64 + 4096),
        )
        .saturating_add(u64::from(pool_tables(config)).saturating_mul(table))
}

/// `config` with `max_instances` resolved on a host with `room` (see
/// [`EngineConfig::pool_size`], logged) and `prewarm` kept within three
/// quarters of the pool.
pub(crate) fn resolve_in(config: &EngineConfig, room: HostRoom) -> EngineConfig {
    let mut c = config.clone();
    if c.max_instances == 0 {
        let (n, bound) = auto_instances(config, room);
        c.max_instances = n;
        if n == AUTO_FLOOR {
            tracing::warn!(
                max_instances = n,
                bound = %bound,
                max_memory = c.max_memory,
                host_memory = room.memory,
                "the sandbox pool is at its floor: this host has little room for it beside what is taken (by `[engine] max-memory`, `memory-keep-resident`, `max-wasm-stack`, or another pool in the process); lower those, or set `max-instances`"
            );
        } else {
            tracing::info!(max_instances = n, bound = %bound, "sandbox pool sized for this host");
        }
    }
    let most = c.max_instances - c.max_instances.div_ceil(4);
    if c.prewarm > most {
        tracing::warn!(
            prewarm = c.prewarm,
            most,
            "prewarm lowered: prepared sandboxes may use at most three quarters of the pool"
        );
        c.prewarm = most;
    }
    c
}

/// The pool size `max-instances = 0` means on a host with `room`: the
/// largest, up to [`AUTO_CEILING`], whose worst case fits every bound of
/// [`Bound`], each computed with the same functions that size the engine;
/// and which bound decided. Never below [`AUTO_FLOOR`]: a pool that small
/// that does not fit is still this size, and the bound returned is the
/// one it does not fit.
pub(crate) fn auto_instances(config: &EngineConfig, room: HostRoom) -> (u32, Bound) {
    let memory_budget = (room.memory / 4 * 3).saturating_sub(config.max_memory);
    let with = |n: u32| EngineConfig {
        max_instances: n,
        ..config.clone()
    };
    let check = |n: u32| -> Option<Bound> {
        let c = with(n);
        if pool_residue(&c) > memory_budget {
            Some(Bound::Memory)
        } else if pool_mappings(&c) > room.mappings / 2 {
            Some(Bound::Mappings)
        } else if pool_address_space(&c) > room.address_space / 2 {
            Some(Bound::AddressSpace)
        } else {
            None
        }
    };
    if check(AUTO_CEILING).is_none() {
        return (AUTO_CEILING, Bound::Ceiling);
    }
    if let Some(bound) = check(AUTO_FLOOR) {
        return (AUTO_FLOOR, bound);
    }
    // Every bound grows with the pool: the largest size that fits lies
    // between the floor (fits) and the ceiling (does not).
    let (mut fits, mut not) = (AUTO_FLOOR, AUTO_CEILING);
    while not - fits > 1 {
        let mid = fits + (not - fits) / 2;
        if check(mid).is_none() {
            fits = mid;
        } else {
            not = mid;
        }
    }
    (fits, check(not).unwrap_or(Bound::Ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn room(memory: u64) -> HostRoom {
        HostRoom {
            memory,
            mappings: 65_000,
            address_space: 127 << 40,
        }
    }

    fn config(memory: u64) -> EngineConfig {
        EngineConfig {
            max_memory: memory / 2,
            load_parallelism: 2,
            ..EngineConfig::default()
        }
    }

    #[test]
    fn the_automatic_pool_fits_every_bound_and_is_the_largest_that_does() {
        for gib in [1, 2, 8, 24, 64, 256] {
            let (c, r) = (config(gib * GIB), room(gib * GIB));
            let (n, bound) = auto_instances(&c, r);
            let sized = EngineConfig {
                max_instances: n,
                ..c.clone()
            };
            let bigger = EngineConfig {
                max_instances: n + 1,
                ..c.clone()
            };
            assert!(
                pool_residue(&sized) + c.max_memory <= r.memory / 4 * 3,
                "{gib} GiB"
            );
            assert!(pool_mappings(&sized) <= r.mappings / 2, "{gib} GiB");
            assert!(
                pool_address_space(&sized) <= r.address_space / 2,
                "{gib} GiB"
            );
            if bound != Bound::Ceiling {
                assert!(
                    pool_residue(&bigger) + c.max_memory > r.memory / 4 * 3
                        || pool_mappings(&bigger) > r.mappings / 2
                        || pool_address_space(&bigger) > r.address_space / 2,
                    "{gib} GiB: {n} is not the largest ({bound})"
                );
            }
        }
    }

    #[test]
    fn the_automatic_pool_grows_with_the_host_and_shrinks_with_what_is_taken() {
        let small = auto_instances(&config(2 * GIB), room(2 * GIB));
        let large = auto_instances(&config(64 * GIB), room(64 * GIB));
        assert!(small.0 < large.0, "{small:?} {large:?}");
        assert_eq!(small.1, Bound::Memory);
        // Another pool in the process took most mappings: this one
        // takes half of what is left.
        let crowded = HostRoom {
            mappings: 4_000,
            ..room(64 * GIB)
        };
        let (n, bound) = auto_instances(&config(64 * GIB), crowded);
        assert_eq!(bound, Bound::Mappings);
        assert!(n < large.0 && n >= AUTO_FLOOR, "{n}");
        // A max-memory as large as the host leaves nothing: the floor.
        let greedy = EngineConfig {
            max_memory: 64 * GIB,
            ..config(64 * GIB)
        };
        assert_eq!(
            auto_instances(&greedy, room(64 * GIB)),
            (AUTO_FLOOR, Bound::Memory)
        );
    }

    #[test]
    fn up_to_256_slots_each_has_two_memories() {
        assert_eq!(memories_for(128), 256);
        assert_eq!(memories_for(256), 512);
        assert_eq!(memories_for(10_000), 10_256);
    }
}
