//! The trade records the benchmarks read: deterministic JSON Lines of about
//! 154 bytes and 9 fields, the same for `velostream bench` (written to a
//! file) and the decoder benchmark (`benches/json_decoders.rs`), so their
//! numbers describe the same input.

use std::fmt::Write;

const EXCHANGES: [&str; 3] = ["NASDAQ", "NYSE", "LSE"];

/// Trade records in order of `id`: symbols `S0000`..`S{keys-1}`, event
/// time `ts` in epoch milliseconds, 3 ms apart (5 M records span about 4
/// hours).
pub struct TradeRecords {
    /// xorshift64* state: cheap, deterministic pseudo-random fields.
    state: u64,
    next_id: u64,
    keys: u64,
}

impl TradeRecords {
    pub fn new(keys: u64) -> Self {
        Self {
            state: 0x9E37_79B9_7F4A_7C15,
            next_id: 0,
            keys: keys.max(1),
        }
    }

    /// Appends the next record and its line break to `out`.
    pub fn write_next(&mut self, out: &mut String) {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let r = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let id = self.next_id;
        self.next_id += 1;
        let _ = writeln!(
            out,
            "{{\"id\":{id},\"symbol\":\"S{:04}\",\"side\":\"{}\",\"price\":{}.{:02},\"quantity\":{},\"exchange\":\"{}\",\"trader\":\"desk_{:02}_trader_{:05}\",\"ccy\":\"USD\",\"ts\":{}}}",
            r % self.keys,
            if r & 1 << 20 == 0 { "BUY" } else { "SELL" },
            20 + (r >> 8) % 480,
            (r >> 24) % 100,
            1 + (r >> 32) % 5000,
            EXCHANGES[((r >> 40) % 3) as usize],
            (r >> 36) % 40,
            (r >> 44) % 20000,
            1_700_000_000_000u64 + id * 3,
        );
    }
}
