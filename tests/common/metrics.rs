//! Reading hubcap's `/metrics`: what a test asserts on instead of the wording of log lines.

// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::net::SocketAddr;

use super::{within, STEP};

/// One scrape of `/metrics`, in the Prometheus text format.
#[derive(Debug, Clone)]
pub struct Scrape {
    text: String,
}

/// Fetches `/metrics` from hubcap's HTTP endpoint at `addr`.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let url = format!("http://{addr}/metrics");
    let response = within("scrape /metrics", STEP, reqwest::get(&url))
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    let text = within("read /metrics", STEP, response.text())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    Scrape { text }
}

impl Scrape {
    /// The sum of every sample of `name` whose labels include `labels` (0 if there is none,
    /// which is how an unlabelled counter that never moved reads).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(parse_sample)
            .filter(|sample| sample.name == name)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(k, v)| sample.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|sample| sample.value)
            .sum()
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// `name{label="value",...} number` or `name number`; label values may hold `,` and `\"`.
fn parse_sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(at) => line.split_at(at),
        None => return None,
    };
    let mut labels = Vec::new();
    let value_text = if let Some(mut rest) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                break after;
            }
            rest = rest.strip_prefix(',').unwrap_or(rest);
            let (key, after_key) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after_key.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => value.push(chars.next()?.1),
                    (at, '"') => break at,
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            rest = &after_key[end + 1..];
        }
    } else {
        rest
    };
    let value = value_text.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}
