//! Marathon placement constraints: `[field, operator, value?]` where the field is `hostname` or a node
//! attribute. A constraint is checked against an offer's node and the nodes the app's tasks already run on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Operator {
    /// At most one task per value.
    Unique,
    /// Only on this value; without one, all tasks on the value the first one got.
    Cluster(Option<String>),
    /// Spread evenly across values (expecting at least this many values).
    GroupBy(Option<u32>),
    /// The value matches the regular expression (entirely).
    Like(String),
    /// The value does not match the regular expression.
    Unlike(String),
    /// At most this many tasks per value.
    MaxPer(u32),
    /// The value is exactly this.
    Is(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    pub field: String,
    pub operator: Operator,
}

/// A node as constraints see it.
pub struct Place<'a> {
    pub hostname: &'a str,
    pub attributes: &'a [(String, String)],
}

impl Place<'_> {
    fn value(&self, field: &str) -> Option<&str> {
        if field == "hostname" {
            return Some(self.hostname);
        }
        self.attributes.iter().find(|(k, _)| k == field).map(|(_, v)| v.as_str())
    }
}

fn full_match(pattern: &str, value: &str) -> bool {
    regex_lite::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|re| re.is_match(value))
}

impl Constraint {
    /// Reads `[field, operator]` or `[field, operator, value]`.
    pub fn parse(json: &Value) -> Result<Constraint, String> {
        let items: Vec<String> = json
            .as_array()
            .ok_or("must be [field, operator, value?]")?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err("the parts of a constraint must be strings".to_string()),
            })
            .collect::<Result<_, _>>()?;
        let (field, op, value) = match items.as_slice() {
            [f, o] => (f.clone(), o.to_ascii_uppercase(), None),
            [f, o, v] => (f.clone(), o.to_ascii_uppercase(), Some(v.clone())),
            _ => return Err("must be [field, operator, value?]".into()),
        };
        let number = |v: Option<String>| -> Result<Option<u32>, String> {
            v.map(|v| v.parse::<u32>().map_err(|_| format!("'{v}' is not a number"))).transpose()
        };
        let required = |v: Option<String>| v.ok_or(format!("{op} needs a value"));
        let operator = match op.as_str() {
            "UNIQUE" => Operator::Unique,
            "CLUSTER" => Operator::Cluster(value),
            "GROUP_BY" => Operator::GroupBy(number(value)?),
            "LIKE" | "UNLIKE" => {
                let pattern = required(value)?;
                regex_lite::Regex::new(&pattern)
                    .map_err(|e| format!("'{pattern}' is not a regular expression: {e}"))?;
                if op == "LIKE" { Operator::Like(pattern) } else { Operator::Unlike(pattern) }
            }
            "MAX_PER" => Operator::MaxPer(number(Some(required(value)?))?.unwrap_or(1)),
            "IS" => Operator::Is(required(value)?),
            other => {
                return Err(format!(
                    "'{other}' is not one of UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS"
                ));
            }
        };
        Ok(Constraint { field, operator })
    }

    pub fn to_json(&self) -> Value {
        let (op, value) = match &self.operator {
            Operator::Unique => ("UNIQUE", None),
            Operator::Cluster(v) => ("CLUSTER", v.clone()),
            Operator::GroupBy(n) => ("GROUP_BY", n.map(|n| n.to_string())),
            Operator::Like(p) => ("LIKE", Some(p.clone())),
            Operator::Unlike(p) => ("UNLIKE", Some(p.clone())),
            Operator::MaxPer(n) => ("MAX_PER", Some(n.to_string())),
            Operator::Is(v) => ("IS", Some(v.clone())),
        };
        match value {
            Some(v) => json!([self.field, op, v]),
            None => json!([self.field, op]),
        }
    }

    /// Whether one more task may go to `place`, given where the app's tasks are.
    pub fn allows(&self, place: &Place<'_>, placed: &[Place<'_>]) -> bool {
        let Some(value) = place.value(&self.field) else {
            // Nodes without the attribute only pass constraints that exclude values.
            return matches!(self.operator, Operator::Unlike(_));
        };
        let count = |v: &str| placed.iter().filter(|p| p.value(&self.field) == Some(v)).count();
        match &self.operator {
            Operator::Unique => count(value) == 0,
            Operator::Cluster(Some(wanted)) | Operator::Is(wanted) => value == wanted,
            Operator::Cluster(None) => placed.iter().filter_map(|p| p.value(&self.field)).all(|v| v == value),
            Operator::Like(pattern) => full_match(pattern, value),
            Operator::Unlike(pattern) => !full_match(pattern, value),
            Operator::MaxPer(n) => count(value) < *n as usize,
            Operator::GroupBy(expected) => {
                let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                for p in placed {
                    if let Some(v) = p.value(&self.field) {
                        *counts.entry(v).or_default() += 1;
                    }
                }
                let here = counts.get(value).copied().unwrap_or(0);
                // While fewer values are in use than expected, an unused value has the fewest tasks (0).
                let fewest = if counts.len() < expected.unwrap_or(0) as usize {
                    0
                } else {
                    counts.values().copied().min().unwrap_or(0)
                };
                here <= fewest
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(json: Value) -> Constraint {
        Constraint::parse(&json).unwrap()
    }

    fn attrs(rack: &str) -> Vec<(String, String)> {
        vec![("rack".into(), rack.into())]
    }

    #[test]
    fn unique_and_max_per_count_tasks_per_value() {
        let (a, b) = (attrs("1"), attrs("2"));
        let placed = [Place { hostname: "h1", attributes: &a }];
        let unique = c(json!(["hostname", "UNIQUE"]));
        assert!(!unique.allows(&Place { hostname: "h1", attributes: &a }, &placed));
        assert!(unique.allows(&Place { hostname: "h2", attributes: &b }, &placed));
        let max2 = c(json!(["rack", "MAX_PER", "2"]));
        assert!(max2.allows(&Place { hostname: "h3", attributes: &a }, &placed));
        let placed2 = [Place { hostname: "h1", attributes: &a }, Place { hostname: "h3", attributes: &a }];
        assert!(!max2.allows(&Place { hostname: "h4", attributes: &a }, &placed2));
    }

    #[test]
    fn like_unlike_is_and_cluster_match_values() {
        let a = attrs("r-12");
        let here = Place { hostname: "web-3", attributes: &a };
        assert!(c(json!(["hostname", "LIKE", "web-[0-9]+"])).allows(&here, &[]));
        assert!(!c(json!(["hostname", "LIKE", "web"])).allows(&here, &[]), "LIKE matches the whole value");
        assert!(!c(json!(["rack", "UNLIKE", "r-1.*"])).allows(&here, &[]));
        assert!(c(json!(["rack", "IS", "r-12"])).allows(&here, &[]));
        assert!(c(json!(["rack", "CLUSTER", "r-12"])).allows(&here, &[]));
        assert!(!c(json!(["zone", "CLUSTER", "z"])).allows(&here, &[]), "no such attribute");
        let b = attrs("r-13");
        assert!(!c(json!(["rack", "CLUSTER"])).allows(&here, &[Place { hostname: "x", attributes: &b }]));
    }

    #[test]
    fn group_by_spreads_evenly() {
        let (r1, r2) = (attrs("1"), attrs("2"));
        let group = c(json!(["rack", "GROUP_BY", "2"]));
        let placed = [Place { hostname: "a", attributes: &r1 }];
        assert!(!group.allows(&Place { hostname: "b", attributes: &r1 }, &placed), "rack 2 is still empty");
        assert!(group.allows(&Place { hostname: "c", attributes: &r2 }, &placed));
    }

    #[test]
    fn bad_constraints_are_refused_with_the_reason() {
        assert!(
            Constraint::parse(&json!(["hostname", "LIKE", "("])).unwrap_err().contains("regular expression")
        );
        assert!(Constraint::parse(&json!(["hostname", "MAX_PER"])).unwrap_err().contains("needs a value"));
        assert_eq!(c(json!(["hostname", "GROUP_BY"])).to_json(), json!(["hostname", "GROUP_BY"]));
    }
}
