//! The price sheet: what each unit of usage costs. The defaults follow the
//! public list prices of the AWS services each Nimbus service stands in for
//! (us-east-1); a node's `--prices FILE` (TOML) overrides any of them.

use serde::{Deserialize, Serialize};

use super::UsageLine;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prices {
    /// Currency code the prices are in (shown, not converted).
    pub currency: String,
    /// Per million invocations (Lambda requests).
    pub invocations_per_million: f64,
    /// Per GB-second of memory × billed duration (Lambda, x86).
    pub gb_second: f64,
    /// Per million gateway requests (API Gateway HTTP APIs).
    pub requests_per_million: f64,
    /// Per million queue or topic messages (SQS / SNS).
    pub messages_per_million: f64,
    /// Per million events put on a bus (EventBridge).
    pub events_per_million: f64,
    /// Per GB-month stored (S3 Standard), billed per GB-hour (730 hours a month).
    pub stored_gb_month: f64,
    /// Per GB sent out of the gateway.
    pub transfer_out_gb: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            currency: "USD".into(),
            invocations_per_million: 0.20,
            gb_second: 0.000_016_666_7,
            requests_per_million: 1.00,
            messages_per_million: 0.40,
            events_per_million: 1.00,
            stored_gb_month: 0.023,
            transfer_out_gb: 0.09,
        }
    }
}

impl Prices {
    /// Reads a price sheet; keys it leaves out keep their defaults.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn cost(&self, line: &UsageLine) -> f64 {
        let million = 1_000_000.0;
        line.invocations as f64 / million * self.invocations_per_million
            + line.gb_seconds * self.gb_second
            + line.requests as f64 / million * self.requests_per_million
            + line.messages as f64 / million * self.messages_per_million
            + line.events as f64 / million * self.events_per_million
            + line.stored_gb_hours / 730.0 * self.stored_gb_month
            + line.transfer_out_bytes as f64 / (1u64 << 30) as f64 * self.transfer_out_gb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_adds_every_unit() {
        let prices = Prices::default();
        let line = UsageLine {
            invocations: 1_000_000,
            gb_seconds: 100_000.0,
            requests: 2_000_000,
            ..UsageLine::default()
        };
        let cost = prices.cost(&line);
        assert!((cost - (0.20 + 1.66667 + 2.0)).abs() < 1e-6, "{cost}");
    }

    #[test]
    fn a_sheet_overrides_some_prices() {
        let prices = Prices::from_toml("currency = \"EUR\"\ngb_second = 0.00002\n").unwrap();
        assert_eq!(prices.currency, "EUR");
        assert_eq!(prices.gb_second, 0.00002);
        assert_eq!(prices.requests_per_million, 1.00);
        assert!(Prices::from_toml("gb_secnd = 1").is_err());
    }
}
