//! The load-balancing plan: which partitions this instance should claim this cycle.
//!
//! A pure function of the partition list, the ownership records, this instance's id, the time,
//! the expiration and the strategy, with the random choices drawn from an injected source, so
//! every case can be tested exactly. It follows the official Python processor's algorithm so
//! hubcap and SDK processors converge when they share a consumer group:
//!
//! - an ownership is active if it was written less than `ownership_expiration` ago and names an
//!   owner; this instance always counts as an active owner;
//! - `min = partitions / owners`, `max = ceil(partitions / owners)`;
//! - every partition this instance owns is renewed;
//! - below `max`: claim every unowned, expired or released partition up to `max`, with either
//!   strategy: nobody reads those, so waiting a cycle per partition only delays the archive (a
//!   fresh single instance owns a 32-partition hub after its first cycle);
//! - still below `min`, or below `max` while another owner holds more than `max` (it took
//!   everything unowned before the others started): steal from the owner holding the most, one
//!   partition per cycle (`balanced`) or all this instance is owed at once (`greedy`), each from
//!   the owner then holding the most.
//!
//! This departs from the Python processor in one place: its `balanced` strategy claims one
//! unowned partition per cycle. Taking more of them at once only makes hubcap converge sooner;
//! claims are ETag-guarded, so a race with another processor costs the loser a claim, never a
//! double owner.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use rand::seq::SliceRandom;
use rand::Rng;

use crate::checkpoint::{Ownership, OwnershipClaim};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Steals at most one partition per cycle from a live owner: fewer ownership changes (and
    /// duplicate reads) while a deployment rolls.
    #[default]
    Balanced,
    /// Steals everything this instance is owed in one cycle.
    Greedy,
}

/// What this instance should write this cycle.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Renewals of partitions it owns (with their current versions).
    pub renewals: Vec<OwnershipClaim>,
    /// New partitions: unowned, expired, released, or stolen.
    pub claims: Vec<OwnershipClaim>,
    /// The partition ids in `claims` taken from a live owner.
    pub stolen: Vec<String>,
}

impl Plan {
    pub fn all_claims(&self) -> Vec<OwnershipClaim> {
        self.renewals.iter().chain(&self.claims).cloned().collect()
    }
}

pub struct BalanceInput<'a> {
    pub partition_ids: &'a [String],
    pub ownerships: &'a [Ownership],
    pub me: &'a str,
    pub now: SystemTime,
    pub ownership_expiration: Duration,
    pub strategy: Strategy,
}

pub fn plan(input: &BalanceInput<'_>, rng: &mut impl Rng) -> Plan {
    let by_partition: HashMap<&str, &Ownership> = input
        .ownerships
        .iter()
        .map(|o| (o.partition_id.as_str(), o))
        .collect();
    let is_active = |o: &Ownership| o.is_active(input.now, input.ownership_expiration);
    // Partitions per active owner; BTreeMap keeps the steal choice deterministic on ties.
    let mut owned_by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    owned_by.entry(input.me).or_default();
    let mut claimable: Vec<&Ownership> = Vec::new();
    let mut unrecorded: Vec<&str> = Vec::new();
    for id in input.partition_ids {
        match by_partition.get(id.as_str()) {
            Some(o) if is_active(o) => owned_by.entry(o.owner_id.as_str()).or_default().push(id),
            Some(o) => claimable.push(o),
            None => unrecorded.push(id),
        }
    }
    let mine: Vec<&str> = owned_by.get(input.me).cloned().unwrap_or_default();
    let mut plan = Plan {
        renewals: mine
            .iter()
            .map(|id| {
                claim(
                    input.me,
                    id,
                    by_partition.get(id).map(|o| o.version.clone()),
                )
            })
            .collect(),
        ..Plan::default()
    };
    let partitions = input.partition_ids.len();
    let owners = owned_by.len();
    let min = partitions / owners;
    let max = partitions.div_ceil(owners);
    let own = mine.len();
    if own >= max {
        return plan;
    }
    let mut candidates: Vec<OwnershipClaim> = unrecorded
        .iter()
        .map(|id| claim(input.me, id, None))
        .chain(
            claimable
                .iter()
                .map(|o| claim(input.me, &o.partition_id, Some(o.version.clone()))),
        )
        .collect();
    candidates.shuffle(rng);
    candidates.truncate(max - own);
    let own = own + candidates.len();
    plan.claims = candidates;
    // Others' partitions; each steal takes from whoever holds the most at that point.
    let mut others: Vec<Vec<&str>> = owned_by
        .iter()
        .filter(|(owner, _)| **owner != input.me)
        .map(|(_, ids)| ids.clone())
        .collect();
    let steals_allowed = match input.strategy {
        Strategy::Balanced => 1,
        Strategy::Greedy => usize::MAX,
    };
    let mut own = own;
    while plan.stolen.len() < steals_allowed {
        let Some(richest) = others
            .iter_mut()
            .filter(|ids| !ids.is_empty())
            .reduce(|best, ids| if ids.len() > best.len() { ids } else { best })
        else {
            break;
        };
        // Below `min`: owed a partition. At `min` but below `max` while an owner holds more
        // than `max`: that owner must shed one, and only a stealer can make it (owners never
        // give partitions away), so the split converges even after one instance took
        // everything unowned at start.
        let owed = own < min || (own < max && richest.len() > max);
        if !owed {
            break;
        }
        let index = rng.gen_range(0..richest.len());
        let id = richest.swap_remove(index);
        let version = by_partition.get(id).map(|o| o.version.clone());
        plan.claims.push(claim(input.me, id, version));
        plan.stolen.push(id.to_owned());
        own += 1;
    }
    plan
}

fn claim(me: &str, partition_id: &str, version: Option<String>) -> OwnershipClaim {
    OwnershipClaim {
        partition_id: partition_id.to_owned(),
        owner_id: me.to_owned(),
        version,
        commit: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const EXPIRATION: Duration = Duration::from_secs(60);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    /// One character per partition: `.` unowned, a letter = active owner, an upper-case letter
    /// = that owner's record has expired, `_` = released.
    fn fixture(layout: &str) -> (Vec<String>, Vec<Ownership>) {
        let ids: Vec<String> = (0..layout.len()).map(|i| i.to_string()).collect();
        let ownerships = layout
            .chars()
            .enumerate()
            .filter(|(_, c)| *c != '.')
            .map(|(i, c)| {
                let (owner, age) = match c {
                    '_' => (String::new(), 1),
                    c if c.is_ascii_uppercase() => (c.to_ascii_lowercase().to_string(), 120),
                    c => (c.to_string(), 1),
                };
                Ownership {
                    partition_id: i.to_string(),
                    owner_id: owner,
                    last_modified: now() - Duration::from_secs(age),
                    version: format!("v{i}"),
                    commit: None,
                }
            })
            .collect();
        (ids, ownerships)
    }

    fn run(layout: &str, me: &str, strategy: Strategy, seed: u64) -> Plan {
        let (ids, ownerships) = fixture(layout);
        plan(
            &BalanceInput {
                partition_ids: &ids,
                ownerships: &ownerships,
                me,
                now: now(),
                ownership_expiration: EXPIRATION,
                strategy,
            },
            &mut StdRng::seed_from_u64(seed),
        )
    }

    fn claimed(plan: &Plan) -> Vec<&str> {
        plan.claims
            .iter()
            .map(|c| c.partition_id.as_str())
            .collect()
    }

    #[test]
    fn alone_both_strategies_claim_every_unowned_partition_at_once() {
        for strategy in [Strategy::Greedy, Strategy::Balanced] {
            let plan = run(&".".repeat(32), "a", strategy, 1);
            assert_eq!(plan.claims.len(), 32, "{strategy:?}");
            assert!(plan.claims.iter().all(|c| c.version.is_none()));
            assert!(plan.stolen.is_empty());
        }
    }

    #[test]
    fn unowned_partitions_are_taken_only_up_to_the_fair_share() {
        // 8 partitions, a and b live: max 4; a owns 1, so it takes 3 of the 5 free ones.
        for strategy in [Strategy::Greedy, Strategy::Balanced] {
            let plan = run("ab_...B.", "a", strategy, 5);
            assert_eq!(plan.claims.len(), 3, "{strategy:?}");
            assert!(plan.stolen.is_empty());
            assert!(claimed(&plan).iter().all(|id| !["0", "1"].contains(id)));
        }
    }

    #[test]
    fn a_fourth_instance_steals_one_per_cycle_when_balanced_and_all_it_is_owed_when_greedy() {
        // 12 partitions, three owners with 4 each; d joins: min 3.
        let layout = "bbbbccccdddd";
        let balanced = run(layout, "a", Strategy::Balanced, 2);
        assert_eq!(balanced.claims.len(), 1);
        assert_eq!(balanced.stolen, claimed(&balanced));
        let greedy = run(layout, "a", Strategy::Greedy, 2);
        assert_eq!(greedy.claims.len(), 3);
        assert_eq!(greedy.stolen, claimed(&greedy));
        // One from each owner: each steal takes from whoever holds the most at that point.
        let mut owners: Vec<char> = greedy
            .stolen
            .iter()
            .map(|id| layout.as_bytes()[id.parse::<usize>().unwrap()] as char)
            .collect();
        owners.sort();
        assert_eq!(owners, vec!['b', 'c', 'd']);
    }

    #[test]
    fn at_min_steals_from_an_owner_above_max() {
        // 8 partitions, owners a b c: min 2, max 3; b holds 4 (it started first).
        let plan = run("bbbbccaa", "a", Strategy::Greedy, 3);
        assert_eq!(plan.stolen.len(), 1);
        assert!(["0", "1", "2", "3"].contains(&plan.stolen[0].as_str()));
        // At min with nobody above max: nothing to do.
        assert!(run("bbbcccaa", "a", Strategy::Greedy, 3).stolen.is_empty());
    }

    #[test]
    fn one_instance_that_took_everything_hands_over_until_the_split_is_even() {
        for (partitions, owners, want) in [
            (8, 3, vec![2, 3, 3]),
            (16, 3, vec![5, 5, 6]),
            (12, 4, vec![3, 3, 3, 3]),
        ] {
            for strategy in [Strategy::Balanced, Strategy::Greedy] {
                let names: Vec<String> = (0..owners)
                    .map(|i| ((b'a' + i as u8) as char).to_string())
                    .collect();
                let layout: String = std::iter::repeat_n('a', partitions).collect();
                let (ids, initial) = fixture(&layout);
                let mut records: HashMap<String, Ownership> = initial
                    .into_iter()
                    .map(|o| (o.partition_id.clone(), o))
                    .collect();
                let mut rng = StdRng::seed_from_u64(11);
                let mut settled = None;
                for cycle in 0..40 {
                    let mut moved = false;
                    for me in &names {
                        let ownerships: Vec<Ownership> = records.values().cloned().collect();
                        let p = plan(
                            &BalanceInput {
                                partition_ids: &ids,
                                ownerships: &ownerships,
                                me,
                                now: now(),
                                ownership_expiration: EXPIRATION,
                                strategy,
                            },
                            &mut rng,
                        );
                        for c in &p.claims {
                            moved = true;
                            let record = records.get_mut(&c.partition_id).unwrap();
                            record.owner_id = me.clone();
                            record.last_modified = now();
                        }
                        if strategy == Strategy::Balanced {
                            assert!(p.stolen.len() <= 1);
                        }
                    }
                    let mut counts: Vec<usize> = names
                        .iter()
                        .map(|me| records.values().filter(|o| &o.owner_id == me).count())
                        .collect();
                    counts.sort();
                    match settled {
                        None if counts == want => settled = Some(cycle),
                        Some(_) => assert!(
                            !moved,
                            "{strategy:?} {partitions}/{owners}: moved after settling"
                        ),
                        None => {}
                    }
                }
                let settled = settled.unwrap_or_else(|| {
                    panic!("{strategy:?} {partitions}/{owners} never split evenly")
                });
                assert!(
                    settled <= partitions,
                    "{strategy:?} {partitions}/{owners}: settled at cycle {settled}"
                );
            }
        }
    }

    #[test]
    fn free_partitions_first_then_a_steal_if_still_below_min() {
        // 9 partitions, owners a b c: min 3. One free partition is not enough for a.
        let plan = run("bbbbcccc.", "a", Strategy::Balanced, 4);
        let ids = claimed(&plan);
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&"8"));
        assert_eq!(plan.stolen.len(), 1);
        assert_ne!(plan.stolen[0], "8");
    }

    #[test]
    fn renews_every_owned_partition_with_its_version() {
        let plan = run("aab.", "a", Strategy::Balanced, 1);
        let renewed: Vec<_> = plan
            .renewals
            .iter()
            .map(|c| (c.partition_id.as_str(), c.version.as_deref()))
            .collect();
        assert_eq!(renewed, vec![("0", Some("v0")), ("1", Some("v1"))]);
        // 4 partitions, 2 owners: a is at max, so no new claim.
        assert!(plan.claims.is_empty());
    }

    #[test]
    fn expired_and_released_partitions_are_claimable_with_their_versions() {
        let plan = run("B_bb", "a", Strategy::Greedy, 3);
        let mut ids = claimed(&plan);
        ids.sort();
        assert_eq!(ids, vec!["0", "1"]);
        assert!(plan.claims.iter().all(|c| c.version.is_some()));
        assert!(plan.stolen.is_empty());
    }

    #[test]
    fn below_min_with_nothing_free_steals_one_from_the_richest() {
        let plan = run("bbbbbbcc", "a", Strategy::Balanced, 7);
        assert_eq!(plan.claims.len(), 1);
        let stolen = plan.stolen[0].clone();
        assert!(["0", "1", "2", "3", "4", "5"].contains(&stolen.as_str()));
        assert_eq!(
            plan.claims[0].version.as_deref(),
            Some(format!("v{stolen}").as_str())
        );
    }

    #[test]
    fn at_min_does_not_steal() {
        // 7 partitions, 2 owners: min 3, max 4; a has 3 and nothing is free.
        let plan = run("aaabbbb", "a", Strategy::Greedy, 1);
        assert!(plan.claims.is_empty());
        assert_eq!(plan.renewals.len(), 3);
    }

    #[test]
    fn three_instances_converge_to_six_five_five_and_stay_put() {
        // Simulate cycles: each instance plans against the same records, claims succeed.
        let ids: Vec<String> = (0..16).map(|i| i.to_string()).collect();
        let mut records: HashMap<String, Ownership> = HashMap::new();
        let mut rng = StdRng::seed_from_u64(42);
        let mut changes_after_convergence = 0;
        let mut converged_at = None;
        for cycle in 0..60 {
            for me in ["a", "b", "c"] {
                let ownerships: Vec<Ownership> = records.values().cloned().collect();
                let p = plan(
                    &BalanceInput {
                        partition_ids: &ids,
                        ownerships: &ownerships,
                        me,
                        now: now(),
                        ownership_expiration: EXPIRATION,
                        strategy: Strategy::Balanced,
                    },
                    &mut rng,
                );
                for c in &p.claims {
                    if converged_at.is_some() {
                        changes_after_convergence += 1;
                    }
                    records.insert(
                        c.partition_id.clone(),
                        Ownership {
                            partition_id: c.partition_id.clone(),
                            owner_id: me.to_owned(),
                            last_modified: now(),
                            version: format!("{cycle}"),
                            commit: None,
                        },
                    );
                }
            }
            let mut counts: Vec<usize> = ["a", "b", "c"]
                .iter()
                .map(|me| records.values().filter(|o| o.owner_id == *me).count())
                .collect();
            counts.sort();
            if counts == vec![5, 5, 6] && converged_at.is_none() {
                converged_at = Some(cycle);
            }
        }
        let converged_at = converged_at.expect("never converged");
        assert!(converged_at <= 12, "converged only at cycle {converged_at}");
        assert_eq!(changes_after_convergence, 0);
    }

    #[test]
    fn same_seed_same_plan() {
        assert_eq!(
            run("....bbbb", "a", Strategy::Greedy, 9),
            run("....bbbb", "a", Strategy::Greedy, 9)
        );
    }
}
