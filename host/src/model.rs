//! Domain helpers on the ABI types the host uses as its own model: resource arithmetic (with the
//! rules shared with the SDK in `berth_proto`), task states, and time.

use std::time::{SystemTime, UNIX_EPOCH};

use berth_proto::{Scalars, ports};

use crate::runtime::bindings::{Resources, TaskReason, TaskShape, TaskState};

/// Arithmetic on [`Resources`].
pub trait ResourcesExt {
    /// Nothing.
    fn zero() -> Self;
    /// CPU, memory, disk, GPUs.
    fn scalars(&self) -> Scalars;
    /// Adds `other` (ports are merged).
    fn add(&mut self, other: &Self);
    /// Removes `other` (quantities floor at zero).
    fn remove(&mut self, other: &Self);
    /// Whether `other` fits entirely in `self`, ports included.
    fn contains(&self, other: &Self) -> bool;
    /// Whether there is nothing here.
    fn is_empty(&self) -> bool;
    /// [`ResourcesExt::add`] of `scalars` and `ports`, held apart.
    fn add_parts<T: ports::Span>(&mut self, scalars: &Scalars, ports: &[T]);
    /// [`ResourcesExt::remove`] of `scalars` and `ports`, held apart.
    fn remove_parts<T: ports::Span>(&mut self, scalars: &Scalars, ports: &[T]);
    /// [`ResourcesExt::contains`] of `scalars` and `ports`, held apart.
    fn contains_parts<T: ports::Span>(&self, scalars: &Scalars, ports: &[T]) -> bool;
}

impl ResourcesExt for Resources {
    fn zero() -> Self {
        Resources { milli_cpus: 0, mem_mib: 0, disk_mib: 0, gpus: 0, ports: Vec::new() }
    }

    fn scalars(&self) -> Scalars {
        Scalars {
            milli_cpus: self.milli_cpus,
            mem_mib: self.mem_mib,
            disk_mib: self.disk_mib,
            gpus: self.gpus,
        }
    }

    fn add(&mut self, other: &Self) {
        self.add_parts(&other.scalars(), &other.ports);
    }

    fn remove(&mut self, other: &Self) {
        self.remove_parts(&other.scalars(), &other.ports);
    }

    fn contains(&self, other: &Self) -> bool {
        self.contains_parts(&other.scalars(), &other.ports)
    }

    fn is_empty(&self) -> bool {
        self.scalars().is_zero() && self.ports.is_empty()
    }

    fn add_parts<T: ports::Span>(&mut self, scalars: &Scalars, ports: &[T]) {
        set_scalars(self, self.scalars().plus(scalars));
        ports::add(&mut self.ports, ports);
    }

    fn remove_parts<T: ports::Span>(&mut self, scalars: &Scalars, ports: &[T]) {
        set_scalars(self, self.scalars().minus(scalars));
        ports::remove(&mut self.ports, ports);
    }

    fn contains_parts<T: ports::Span>(&self, scalars: &Scalars, ports: &[T]) -> bool {
        scalars.fits_in(&self.scalars()) && ports::contains(&self.ports, ports)
    }
}

fn set_scalars(r: &mut Resources, s: Scalars) {
    r.milli_cpus = s.milli_cpus;
    r.mem_mib = s.mem_mib;
    r.disk_mib = s.disk_mib;
    r.gpus = s.gpus;
}

/// A task shape's resources for one task, without ports.
pub fn shape_scalars(shape: &TaskShape) -> Scalars {
    Scalars {
        milli_cpus: shape.milli_cpus,
        mem_mib: shape.mem_mib,
        disk_mib: shape.disk_mib,
        gpus: shape.gpus,
    }
}

/// Whether a task in this state is over for good.
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Finished | TaskState::Failed | TaskState::Killed | TaskState::Lost | TaskState::Error
    )
}

/// The lower-case name of a state, as the CLI and the JSON API show it.
pub fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Staging => "staging",
        TaskState::Starting => "starting",
        TaskState::Running => "running",
        TaskState::Killing => "killing",
        TaskState::Finished => "finished",
        TaskState::Failed => "failed",
        TaskState::Killed => "killed",
        TaskState::Lost => "lost",
        TaskState::Error => "error",
    }
}

/// The state named `name` (as [`state_name`] writes it).
pub fn parse_state(name: &str) -> Option<TaskState> {
    [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Lost,
        TaskState::Error,
    ]
    .into_iter()
    .find(|s| state_name(*s) == name.to_ascii_lowercase())
}

/// The kebab-case name of a reason, as in the WIT.
pub fn reason_name(reason: TaskReason) -> &'static str {
    match reason {
        TaskReason::CommandFailed => "command-failed",
        TaskReason::MemoryLimit => "memory-limit",
        TaskReason::KilledByFramework => "killed-by-framework",
        TaskReason::HealthCheckFailed => "health-check-failed",
        TaskReason::HealthChanged => "health-changed",
        TaskReason::AgentLost => "agent-lost",
        TaskReason::ContainerVanished => "container-vanished",
        TaskReason::ImagePullFailed => "image-pull-failed",
        TaskReason::ContainerLaunchFailed => "container-launch-failed",
        TaskReason::InvalidLaunch => "invalid-launch",
        TaskReason::NodeDrained => "node-drained",
        TaskReason::FrameworkRemoved => "framework-removed",
        TaskReason::Reconciliation => "reconciliation",
        TaskReason::TaskUnknown => "task-unknown",
    }
}

/// Now as an ISO 8601 timestamp with milliseconds (as Marathon's events carry it).
pub fn iso_now() -> String {
    iso_ms(unix_ms())
}

/// `ms` since the Unix epoch as an ISO 8601 timestamp with milliseconds.
pub fn iso_ms(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    let rest = ms % 86_400_000;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1_000 % 60,
        rest % 1_000
    )
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::PortRange;

    #[test]
    fn host_resources_follow_the_shared_rules() {
        let mut node = Resources { ports: vec![PortRange { begin: 10, end: 20 }], ..Resources::zero() };
        node.milli_cpus = 2000;
        let task =
            Resources { milli_cpus: 500, ports: vec![PortRange { begin: 12, end: 12 }], ..Resources::zero() };
        assert!(node.contains(&task));
        node.remove(&task);
        assert_eq!(node.milli_cpus, 1500);
        assert_eq!(node.ports, vec![PortRange { begin: 10, end: 11 }, PortRange { begin: 13, end: 20 }]);
        assert!(!node.contains(&task), "the port is taken");
        node.add(&task);
        assert_eq!(node.ports, vec![PortRange { begin: 10, end: 20 }]);
    }

    #[test]
    fn state_names_round_trip() {
        for name in ["staging", "running", "killing", "error"] {
            assert_eq!(state_name(parse_state(name).unwrap()), name);
        }
        assert_eq!(parse_state("RUNNING"), Some(TaskState::Running));
        assert_eq!(parse_state("bogus"), None);
    }
}
