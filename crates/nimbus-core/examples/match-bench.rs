//! Rule matching, indexed (`RuleSet::matching`) against every rule and every
//! field (`RuleSet::matching_naive`), for bench/events-bench.sh:
//! `cargo run --release -p nimbus-core --example match-bench -- RULES EVENTS`.
//! Each rule is `{ type = ["t.I"], data = { total = [{ numeric = [">", I] }] } }`;
//! events have random types among the rules' and random totals. Prints one line
//! per matcher with events/s.

use std::time::Instant;

use nimbus_core::pattern::{Pattern, RuleSet};
use serde_json::json;

fn main() {
    let mut args = std::env::args().skip(1);
    let rules: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let events: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let set = RuleSet::new((0..rules).map(|i| {
        let p = json!({"type": [format!("t.{i}")], "data": {"total": [{"numeric": [">", i]}]}});
        (i, Pattern::parse(&p).expect("valid"))
    }));
    // A fixed pseudo-random sequence (xorshift), the same for both matchers.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let sample: Vec<serde_json::Value> = (0..1000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = x as usize % rules;
            json!({"specversion": "1.0", "id": "e", "source": "bench", "type": format!("t.{i}"),
                   "data": {"total": (x >> 20) % (2 * rules as u64)}})
        })
        .collect();
    for (name, naive) in [("indexed", false), ("naive", true)] {
        let started = Instant::now();
        let mut matched = 0usize;
        for n in 0..events {
            let e = &sample[n % sample.len()];
            matched += if naive {
                set.matching_naive(e).len()
            } else {
                set.matching(e).len()
            };
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "matcher={name} rules={rules} events={events} matched={matched} events_per_s={:.0}",
            events as f64 / secs
        );
    }
}
