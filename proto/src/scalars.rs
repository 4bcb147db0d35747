//! The countable resources, without ports.

/// CPU, memory, disk and GPUs: the resources that add and subtract as plain integers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scalars {
    /// Thousandths of a core.
    pub milli_cpus: u64,
    /// MiB.
    pub mem_mib: u64,
    /// MiB.
    pub disk_mib: u64,
    /// Whole GPUs.
    pub gpus: u32,
}

impl Scalars {
    /// Nothing at all.
    pub const ZERO: Scalars = Scalars { milli_cpus: 0, mem_mib: 0, disk_mib: 0, gpus: 0 };

    /// Whether every quantity is zero.
    #[inline]
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// Whether `self` fits in `other`, quantity by quantity.
    #[inline]
    pub fn fits_in(&self, other: &Scalars) -> bool {
        self.milli_cpus <= other.milli_cpus
            && self.mem_mib <= other.mem_mib
            && self.disk_mib <= other.disk_mib
            && self.gpus <= other.gpus
    }

    /// The sum, saturating at the integer limits.
    #[must_use]
    #[inline]
    pub fn plus(&self, other: &Scalars) -> Scalars {
        Scalars {
            milli_cpus: self.milli_cpus.saturating_add(other.milli_cpus),
            mem_mib: self.mem_mib.saturating_add(other.mem_mib),
            disk_mib: self.disk_mib.saturating_add(other.disk_mib),
            gpus: self.gpus.saturating_add(other.gpus),
        }
    }

    /// The difference, each quantity floored at zero.
    #[must_use]
    #[inline]
    pub fn minus(&self, other: &Scalars) -> Scalars {
        Scalars {
            milli_cpus: self.milli_cpus.saturating_sub(other.milli_cpus),
            mem_mib: self.mem_mib.saturating_sub(other.mem_mib),
            disk_mib: self.disk_mib.saturating_sub(other.disk_mib),
            gpus: self.gpus.saturating_sub(other.gpus),
        }
    }

    /// `self` times `n`, saturating.
    #[must_use]
    #[inline]
    pub fn times(&self, n: u64) -> Scalars {
        Scalars {
            milli_cpus: self.milli_cpus.saturating_mul(n),
            mem_mib: self.mem_mib.saturating_mul(n),
            disk_mib: self.disk_mib.saturating_mul(n),
            gpus: u32::try_from(u64::from(self.gpus).saturating_mul(n)).unwrap_or(u32::MAX),
        }
    }

    /// The dominant share of `self` in `total`: the largest fraction `self` holds of any resource that
    /// `total` has (resources the cluster lacks entirely are ignored).
    #[inline]
    pub fn dominant_share(&self, total: &Scalars) -> f64 {
        fn share(used: u64, total: u64) -> f64 {
            if total == 0 { 0.0 } else { used as f64 / total as f64 }
        }
        // Shares are never NaN, so a comparison does what `f64::max` does; in wasm32, where allocator
        // plugins run this, `max` is a call to libm's `fmax` (NaN rules) on every share computed.
        fn larger(a: f64, b: f64) -> f64 {
            if b > a { b } else { a }
        }
        let cpus = share(self.milli_cpus, total.milli_cpus);
        let mem = share(self.mem_mib, total.mem_mib);
        let disk = share(self.disk_mib, total.disk_mib);
        let gpus = share(u64::from(self.gpus), u64::from(total.gpus));
        larger(larger(cpus, mem), larger(disk, gpus))
    }

    /// Whether `self` holds at least one of the quantities in `minimum` that is non-zero (Mesos's
    /// `--min_allocatable_resources` rule: an offer is worth making if any one resource is worth it).
    /// A zero `minimum` accepts anything non-empty.
    #[inline]
    pub fn meets_minimum(&self, minimum: &Scalars) -> bool {
        if minimum.is_zero() {
            return !self.is_zero();
        }
        (minimum.milli_cpus > 0 && self.milli_cpus >= minimum.milli_cpus)
            || (minimum.mem_mib > 0 && self.mem_mib >= minimum.mem_mib)
            || (minimum.disk_mib > 0 && self.disk_mib >= minimum.disk_mib)
            || (minimum.gpus > 0 && self.gpus >= minimum.gpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline]
    fn s(milli_cpus: u64, mem_mib: u64) -> Scalars {
        Scalars { milli_cpus, mem_mib, ..Scalars::ZERO }
    }

    #[test]
    fn dominant_share_picks_the_largest_fraction() {
        let total = s(9000, 18 * 1024);
        assert!((s(1000, 4 * 1024).dominant_share(&total) - 4.0 / 18.0).abs() < 1e-12);
        assert!((s(3000, 1024).dominant_share(&total) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(Scalars { gpus: 1, ..Scalars::ZERO }.dominant_share(&total), 0.0);
    }

    #[test]
    fn minimum_is_met_by_any_one_resource() {
        let min = s(10, 32);
        assert!(s(10, 0).meets_minimum(&min));
        assert!(s(0, 32).meets_minimum(&min));
        assert!(!s(9, 31).meets_minimum(&min));
        assert!(!Scalars::ZERO.meets_minimum(&Scalars::ZERO));
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(s(1, 1).minus(&s(5, 0)), s(0, 1));
        assert!(s(1, 2).fits_in(&s(1, 2)));
        assert!(!s(2, 2).fits_in(&s(1, 2)));
        assert_eq!(s(u64::MAX, 1).plus(&s(1, 1)), s(u64::MAX, 2));
    }
}
