//! Priority classes: named levels (default `vip`, `normal`, `batch`) mapped onto the engine
//! scheduler's numeric priority, each with its own queue cap, queue wait, wait mode and
//! inter-token latency target. A request's class comes from its caller's API-key tier, else
//! from the request's `priority` field when the configuration allows it, else the default.

use std::time::Duration;

use serde_json::Value;

use crate::error::ApiError;

/// One class as configured.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassConfig {
    pub name: String,
    /// The scheduler priority (higher runs first, and may preempt lower).
    pub priority: i32,
    /// Most requests of this class waiting for the engine (`None`: unbounded).
    pub max_queue: Option<usize>,
    /// Longest a request may wait for the engine before it is answered 503.
    pub max_queue_wait: Option<Duration>,
    /// A full queue makes a request wait (connection open, keep-alives on streams) for a
    /// place instead of answering 429 at once.
    pub wait_mode: bool,
    /// Adaptive batching: the inter-token latency the engine holds while such a request runs.
    pub target_itl: Option<Duration>,
}

impl ClassConfig {
    pub fn new(name: &str, priority: i32) -> Self {
        ClassConfig {
            name: name.to_string(),
            priority,
            max_queue: None,
            max_queue_wait: None,
            wait_mode: false,
            target_itl: None,
        }
    }
}

/// The default classes: `vip` (100), `normal` (0), `batch` (-100).
pub fn default_classes() -> Vec<ClassConfig> {
    vec![
        ClassConfig::new("vip", 100),
        ClassConfig::new("normal", 0),
        ClassConfig::new("batch", -100),
    ]
}

/// Parse `vip=100,normal=0,batch=-100`.
pub fn parse_class_list(s: &str) -> Result<Vec<ClassConfig>, String> {
    let mut out: Vec<ClassConfig> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, prio) = split_assignment(part)?;
        let priority: i32 = prio
            .parse()
            .map_err(|_| format!("`{part}`: the priority must be an integer"))?;
        if out.iter().any(|c| c.name == name) {
            return Err(format!("class `{name}` is listed twice"));
        }
        out.push(ClassConfig::new(name, priority));
    }
    if out.is_empty() {
        return Err("no classes given (expected NAME=PRIORITY,...)".into());
    }
    Ok(out)
}

/// Split `NAME=VALUE`, checking the name is a plain identifier.
pub fn split_assignment(s: &str) -> Result<(&str, &str), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected CLASS=VALUE"))?;
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!("`{s}`: `{name}` is not a class name"));
    }
    Ok((name, value))
}

/// The configured classes and how a request picks one.
#[derive(Clone, Debug)]
pub struct Classes {
    classes: Vec<ClassConfig>,
    default: usize,
    allow_request_priority: bool,
}

impl Classes {
    pub fn new(
        classes: Vec<ClassConfig>,
        default_class: &str,
        allow_request_priority: bool,
    ) -> Result<Self, String> {
        if classes.is_empty() {
            return Err("at least one priority class is needed".into());
        }
        let default = classes
            .iter()
            .position(|c| c.name == default_class)
            .ok_or_else(|| {
                format!(
                    "the default class `{default_class}` is not one of the classes ({})",
                    names(&classes)
                )
            })?;
        Ok(Classes {
            classes,
            default,
            allow_request_priority,
        })
    }

    pub fn all(&self) -> &[ClassConfig] {
        &self.classes
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c.name == name)
    }

    pub fn default_index(&self) -> usize {
        self.default
    }

    /// The class of a request: the caller's tier wins (an unknown tier falls back to the
    /// default, logged); then the body's `priority` (a class name, or a number meaning the
    /// highest class at or below it) if allowed; else the default.
    pub fn resolve(&self, tier: Option<&str>, priority: Option<&Value>) -> Result<usize, ApiError> {
        if let Some(t) = tier {
            return Ok(self.index_of(t).unwrap_or_else(|| {
                tracing::warn!(
                    tier = t,
                    "API-key tier is not a priority class; using the default"
                );
                self.default
            }));
        }
        let Some(p) = priority.filter(|p| !p.is_null()) else {
            return Ok(self.default);
        };
        if !self.allow_request_priority {
            return Ok(self.default);
        }
        let bad = |msg: String| Err(ApiError::bad_request(msg, Some("priority")));
        match p {
            Value::String(s) => match self.index_of(s) {
                Some(i) => Ok(i),
                None => bad(format!(
                    "Unknown priority class `{s}` (classes: {}).",
                    names(&self.classes)
                )),
            },
            Value::Number(n) => match n.as_i64() {
                Some(v) => Ok(self.for_number(v)),
                None => bad(format!("`priority` = {n} is not an integer.")),
            },
            other => bad(format!(
                "`priority` must be a class name or an integer; got {other}."
            )),
        }
    }

    /// The class with the highest priority ≤ `v` (the lowest class when `v` is below all).
    fn for_number(&self, v: i64) -> usize {
        let below = self
            .classes
            .iter()
            .enumerate()
            .filter(|(_, c)| i64::from(c.priority) <= v)
            .max_by_key(|(_, c)| c.priority);
        match below {
            Some((i, _)) => i,
            None => self
                .classes
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.priority)
                .map_or(self.default, |(i, _)| i),
        }
    }
}

fn names(c: &[ClassConfig]) -> String {
    c.iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn classes(allow: bool) -> Classes {
        Classes::new(default_classes(), "normal", allow).unwrap()
    }

    #[test]
    fn parses_class_lists_and_rejects_bad_ones() {
        let c = parse_class_list("gold=10, silver=0,bronze=-5").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!((c[2].name.as_str(), c[2].priority), ("bronze", -5));
        assert!(parse_class_list("a=1,a=2").unwrap_err().contains("twice"));
        assert!(parse_class_list("a=x").unwrap_err().contains("integer"));
        assert!(parse_class_list("a b=1")
            .unwrap_err()
            .contains("not a class"));
        assert!(parse_class_list("").is_err());
        assert!(Classes::new(c, "normal", true)
            .unwrap_err()
            .contains("gold, silver"));
    }

    #[test]
    fn tier_beats_body_and_body_needs_permission() {
        let c = classes(true);
        let vip = json!("vip");
        assert_eq!(c.resolve(Some("batch"), Some(&vip)).unwrap(), 2);
        assert_eq!(c.resolve(Some("platinum"), Some(&vip)).unwrap(), 1);
        assert_eq!(c.resolve(None, Some(&vip)).unwrap(), 0);
        assert_eq!(c.resolve(None, None).unwrap(), 1);
        assert_eq!(classes(false).resolve(None, Some(&vip)).unwrap(), 1);
        let e = c.resolve(None, Some(&json!("gold"))).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert!(e.message.contains("vip, normal, batch"), "{}", e.message);
        assert!(c.resolve(None, Some(&json!([1]))).is_err());
    }

    #[test]
    fn numeric_priorities_pick_the_class_at_or_below() {
        let c = classes(true);
        let r = |v: i64| c.resolve(None, Some(&json!(v))).unwrap();
        assert_eq!(r(100), 0);
        assert_eq!(r(1000), 0);
        assert_eq!(r(99), 1);
        assert_eq!(r(0), 1);
        assert_eq!(r(-1), 2);
        assert_eq!(r(-1000), 2);
    }
}
