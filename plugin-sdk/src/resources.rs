//! Arithmetic on [`Resources`], [`PortRange`] and [`TaskShape`], with the same rules the host uses to
//! validate grants and launches (`berth_proto::ports`, `berth_proto::Scalars`).

use berth_proto::{Scalars, ports};

use crate::{PortRange, Resources, TaskShape};

impl ports::Span for PortRange {
    fn begin(&self) -> u16 {
        self.begin
    }
    fn end(&self) -> u16 {
        self.end
    }
    fn new(begin: u16, end: u16) -> Self {
        PortRange { begin, end }
    }
}

impl Default for Resources {
    fn default() -> Self {
        Resources { milli_cpus: 0, mem_mib: 0, disk_mib: 0, gpus: 0, ports: Vec::new() }
    }
}

impl Resources {
    /// CPU (thousandths of a core) and memory (MiB), nothing else.
    pub fn new(milli_cpus: u64, mem_mib: u64) -> Self {
        Resources { milli_cpus, mem_mib, ..Default::default() }
    }

    /// The same resources with these host ports.
    #[must_use]
    pub fn with_ports(mut self, mut ports: Vec<PortRange>) -> Self {
        ports::normalize(&mut ports);
        self.ports = ports;
        self
    }

    /// CPU, memory, disk and GPUs, without ports.
    pub fn scalars(&self) -> Scalars {
        Scalars {
            milli_cpus: self.milli_cpus,
            mem_mib: self.mem_mib,
            disk_mib: self.disk_mib,
            gpus: self.gpus,
        }
    }

    fn set_scalars(&mut self, s: Scalars) {
        self.milli_cpus = s.milli_cpus;
        self.mem_mib = s.mem_mib;
        self.disk_mib = s.disk_mib;
        self.gpus = s.gpus;
    }

    /// How many host ports these resources hold.
    pub fn port_count(&self) -> u64 {
        ports::count(&self.ports)
    }

    /// Whether there is nothing here at all.
    pub fn is_empty(&self) -> bool {
        self.scalars().is_zero() && self.ports.is_empty()
    }

    /// Whether `other` fits entirely in `self`, ports included.
    pub fn contains(&self, other: &Resources) -> bool {
        other.scalars().fits_in(&self.scalars()) && ports::contains(&self.ports, &other.ports)
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Resources) {
        self.set_scalars(self.scalars().plus(&other.scalars()));
        ports::add(&mut self.ports, &other.ports);
    }

    /// Removes `other` from `self` (quantities floor at zero).
    pub fn remove(&mut self, other: &Resources) {
        self.set_scalars(self.scalars().minus(&other.scalars()));
        ports::remove(&mut self.ports, &other.ports);
    }

    /// Whether one task of `shape` fits in `self`.
    pub fn fits(&self, shape: &TaskShape) -> bool {
        shape.scalars().fits_in(&self.scalars()) && self.port_count() >= u64::from(shape.ports)
    }

    /// Takes what one task of `shape` needs out of `self` (the lowest free ports when it needs ports) and
    /// returns it, or returns `None` and leaves `self` alone when it does not fit.
    pub fn take_shape(&mut self, shape: &TaskShape) -> Option<Resources> {
        if !self.fits(shape) {
            return None;
        }
        let taken_ports = ports::take(&mut self.ports, shape.ports)?;
        self.set_scalars(self.scalars().minus(&shape.scalars()));
        let mut taken = Resources::default();
        taken.set_scalars(shape.scalars());
        taken.ports = taken_ports;
        Some(taken)
    }

    /// The dominant share of `self` in `total` (see [`Scalars::dominant_share`]).
    pub fn dominant_share(&self, total: &Resources) -> f64 {
        self.scalars().dominant_share(&total.scalars())
    }
}

impl TaskShape {
    /// `count` tasks of `milli_cpus` and `mem_mib` each, no disk, GPUs or ports.
    pub fn new(milli_cpus: u64, mem_mib: u64, count: u32) -> Self {
        TaskShape { milli_cpus, mem_mib, disk_mib: 0, gpus: 0, ports: 0, count }
    }

    /// One task's CPU, memory, disk and GPUs.
    pub fn scalars(&self) -> Scalars {
        Scalars {
            milli_cpus: self.milli_cpus,
            mem_mib: self.mem_mib,
            disk_mib: self.disk_mib,
            gpus: self.gpus,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_shape_takes_scalars_and_lowest_ports() {
        let mut free = Resources::new(2000, 1024).with_ports(vec![PortRange { begin: 31000, end: 31001 }]);
        let shape = TaskShape { ports: 1, ..TaskShape::new(500, 256, 1) };
        let taken = free.take_shape(&shape).unwrap();
        assert_eq!(taken, Resources::new(500, 256).with_ports(vec![PortRange { begin: 31000, end: 31000 }]));
        assert_eq!(free, Resources::new(1500, 768).with_ports(vec![PortRange { begin: 31001, end: 31001 }]));
        free.take_shape(&shape).unwrap();
        assert_eq!(free.take_shape(&shape), None, "no ports left");
        assert_eq!(free.milli_cpus, 1000, "a failed take leaves resources alone");
    }

    #[test]
    fn contains_checks_ports_too() {
        let node = Resources::new(1000, 100).with_ports(vec![PortRange { begin: 10, end: 20 }]);
        assert!(node.contains(&Resources::new(1000, 100)));
        assert!(!node.contains(&Resources::new(0, 0).with_ports(vec![PortRange { begin: 21, end: 21 }])));
        let mut sum = Resources::new(1, 1);
        sum.add(&node);
        sum.remove(&Resources::new(5000, 0));
        assert_eq!(sum, Resources::new(0, 101).with_ports(vec![PortRange { begin: 10, end: 20 }]));
    }
}
