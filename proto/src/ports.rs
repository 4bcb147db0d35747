//! Sets of host ports, written as inclusive ranges.
//!
//! A set is *normal* when its ranges are sorted, each has `begin <= end`, and no two overlap or touch
//! (`[1-2, 3-4]` is written `[1-4]`). Functions that take a set as `set` expect it normal; functions
//! that take another (`other`, `sub`) accept any list and read it as the union of its ranges.
//!
//! The functions are generic over [`Span`] because the host and the plugins each have their own
//! generated `PortRange` type for the same WIT record.

/// An inclusive range of ports.
pub trait Span {
    /// First port in the range.
    fn begin(&self) -> u16;
    /// Last port in the range (inclusive).
    fn end(&self) -> u16;
    /// A range from `begin` to `end` inclusive.
    fn new(begin: u16, end: u16) -> Self;
}

impl Span for (u16, u16) {
    fn begin(&self) -> u16 {
        self.0
    }
    fn end(&self) -> u16 {
        self.1
    }
    fn new(begin: u16, end: u16) -> Self {
        (begin, end)
    }
}

/// A range as `[begin, end]`: how the ABI's port columns carry them, read in place.
impl Span for [u16; 2] {
    fn begin(&self) -> u16 {
        self[0]
    }
    fn end(&self) -> u16 {
        self[1]
    }
    fn new(begin: u16, end: u16) -> Self {
        [begin, end]
    }
}

/// How many ports the ranges cover (overlaps counted once only if `set` is normal).
pub fn count<S: Span>(set: &[S]) -> u64 {
    set.iter().filter(|r| r.begin() <= r.end()).map(|r| u64::from(r.end()) - u64::from(r.begin()) + 1).sum()
}

/// Whether `set` is normal (sorted, valid, neither overlapping nor touching).
pub fn is_normal<S: Span>(set: &[S]) -> bool {
    set.iter().all(|r| r.begin() <= r.end())
        && set.windows(2).all(|w| u32::from(w[0].end()) + 1 < u32::from(w[1].begin()))
}

/// Puts any list of ranges into normal form; ranges with `begin > end` are dropped.
pub fn normalize<S: Span>(set: &mut Vec<S>) {
    if is_normal(set) {
        return;
    }
    let mut pairs: Vec<(u16, u16)> =
        set.iter().filter(|r| r.begin() <= r.end()).map(|r| (r.begin(), r.end())).collect();
    pairs.sort_unstable();
    set.clear();
    let mut current: Option<(u16, u16)> = None;
    for (begin, end) in pairs {
        current = match current {
            Some((b, e)) if u32::from(begin) <= u32::from(e) + 1 => Some((b, e.max(end))),
            Some((b, e)) => {
                set.push(S::new(b, e));
                Some((begin, end))
            }
            None => Some((begin, end)),
        };
    }
    if let Some((b, e)) = current {
        set.push(S::new(b, e));
    }
}

/// Whether `port` is in `set`.
pub fn contains_port<S: Span>(set: &[S], port: u16) -> bool {
    let i = set.partition_point(|r| r.end() < port);
    set.get(i).is_some_and(|r| r.begin() <= port)
}

/// Whether every port of `sub` is in `set`.
pub fn contains<S: Span, T: Span>(set: &[S], sub: &[T]) -> bool {
    sub.iter().filter(|r| r.begin() <= r.end()).all(|r| {
        let i = set.partition_point(|s| s.end() < r.begin());
        set.get(i).is_some_and(|s| s.begin() <= r.begin() && r.end() <= s.end())
    })
}

/// Whether `a` and `b` share at least one port.
pub fn overlaps<S: Span, T: Span>(a: &[S], b: &[T]) -> bool {
    b.iter().filter(|r| r.begin() <= r.end()).any(|r| {
        let i = a.partition_point(|s| s.end() < r.begin());
        a.get(i).is_some_and(|s| s.begin() <= r.end())
    })
}

/// Adds every port of `other` to `set`.
///
/// Ranges that come after `set`'s last one (or touch or overlap only that one), as the ports first fit
/// takes for the same grant do, are appended or merged in place; anything else costs a sort.
pub fn add<S: Span, T: Span>(set: &mut Vec<S>, other: &[T]) {
    for (i, r) in other.iter().enumerate() {
        if !append(set, r.begin(), r.end()) {
            set.extend(other[i..].iter().map(|r| S::new(r.begin(), r.end())));
            return normalize(set);
        }
    }
}

/// Adds `begin..=end` to the normal `set` in place if it starts at or after the beginning of `set`'s last
/// range; `false` (and `set` unchanged) if it starts before. An empty range (`begin > end`) adds nothing.
pub fn append<S: Span>(set: &mut Vec<S>, begin: u16, end: u16) -> bool {
    if begin > end {
        return true;
    }
    match set.last_mut() {
        Some(last) if u32::from(begin) <= u32::from(last.end()) + 1 => {
            if begin < last.begin() {
                return false;
            }
            if end > last.end() {
                *last = S::new(last.begin(), end);
            }
        }
        _ => set.push(S::new(begin, end)),
    }
    true
}

/// Removes every port of `other` from `set`.
pub fn remove<S: Span, T: Span>(set: &mut Vec<S>, other: &[T]) {
    if other.is_empty() || set.is_empty() {
        return;
    }
    let mut cut: Vec<(u16, u16)> = other.iter().map(|r| (r.begin(), r.end())).collect();
    normalize(&mut cut);
    let mut out = Vec::with_capacity(set.len() + cut.len());
    let mut j = 0;
    for r in set.iter() {
        let (mut begin, end) = (u32::from(r.begin()), u32::from(r.end()));
        while j < cut.len() && u32::from(cut[j].1) < begin {
            j += 1;
        }
        let mut k = j;
        while begin <= end {
            match cut.get(k) {
                Some(&(cb, ce)) if u32::from(cb) <= end => {
                    if u32::from(cb) > begin {
                        out.push(S::new(begin as u16, (u32::from(cb) - 1) as u16));
                    }
                    begin = u32::from(ce) + 1;
                    k += 1;
                }
                _ => {
                    out.push(S::new(begin as u16, end as u16));
                    break;
                }
            }
        }
    }
    *set = out;
}

/// Takes the `n` lowest ports out of `set` and returns them (normal), or `None` (leaving `set` as it
/// was) when it has fewer than `n`.
pub fn take<S: Span>(set: &mut Vec<S>, n: u32) -> Option<Vec<S>> {
    let mut taken = Vec::new();
    // Whole ranges of a normal set and the start of the next one: normal as they come.
    take_each(set, n, |begin, end| taken.push(S::new(begin, end))).then_some(taken)
}

/// Takes the `n` lowest ports out of `set` and hands each range of them to `taken` (`begin`, `end`), lowest
/// first; or returns `false`, leaving `set` as it was, when it has fewer than `n`.
pub fn take_each<S: Span>(set: &mut Vec<S>, n: u32, mut taken: impl FnMut(u16, u16)) -> bool {
    if n == 0 {
        return true;
    }
    if count(set) < u64::from(n) {
        return false;
    }
    let (mut left, mut consumed) = (n, 0);
    while left > 0 {
        let (begin, end) = (u32::from(set[consumed].begin()), u32::from(set[consumed].end()));
        let size = end - begin + 1;
        if size <= left {
            taken(begin as u16, end as u16);
            left -= size;
            consumed += 1;
        } else {
            let last = begin + left - 1;
            taken(begin as u16, last as u16);
            set[consumed] = S::new((last + 1) as u16, end as u16);
            left = 0;
        }
    }
    set.drain(..consumed);
    true
}

/// Appends `ranges` to `bounds` the way the ABI's column records carry port ranges (`grant-columns`,
/// `resource-columns`): each range as its first port, then its last.
pub fn push_bounds<S: Span>(bounds: &mut Vec<u16>, ranges: &[S]) {
    bounds.reserve(2 * ranges.len());
    for range in ranges {
        bounds.push(range.begin());
        bounds.push(range.end());
    }
}

/// Why [`split_bounds`] refused port columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundsError {
    /// `bounds` holds an odd number of ports.
    Odd,
    /// The counts ask for more ranges than `bounds` holds.
    Short,
    /// Ranges are left in `bounds` after every entry has its own.
    Unused,
}

impl std::fmt::Display for BoundsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BoundsError::Odd => "an odd number of port bounds",
            BoundsError::Short => "more port ranges than `port-bounds` holds",
            BoundsError::Unused => "port bounds that no entry holds",
        })
    }
}

impl std::error::Error for BoundsError {}

/// Checks that `bounds` holds exactly what [`push_bounds`] wrote for a list of entries of `counts[i]`
/// ranges each: every bound belongs to exactly one entry.
pub fn check_bounds(counts: &[u32], bounds: &[u16]) -> Result<(), BoundsError> {
    if !bounds.len().is_multiple_of(2) {
        return Err(BoundsError::Odd);
    }
    let ranges: u64 = counts.iter().map(|&n| u64::from(n)).sum();
    match ranges.cmp(&(bounds.len() as u64 / 2)) {
        std::cmp::Ordering::Greater => Err(BoundsError::Short),
        std::cmp::Ordering::Less => Err(BoundsError::Unused),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Reads back what [`push_bounds`] wrote for a list of entries: `counts[i]` ranges for entry `i`, in
/// order. Every bound must belong to exactly one entry ([`check_bounds`]).
pub fn split_bounds<S: Span>(counts: &[u32], bounds: &[u16]) -> Result<Vec<Vec<S>>, BoundsError> {
    check_bounds(counts, bounds)?;
    let mut rest = bounds;
    let split = |&n: &u32| {
        let (entry, after) = rest.split_at(2 * n as usize);
        rest = after;
        entry.chunks_exact(2).map(|b| S::new(b[0], b[1])).collect()
    };
    Ok(counts.iter().map(split).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(r: &[(u16, u16)]) -> Vec<(u16, u16)> {
        r.to_vec()
    }

    #[test]
    fn normalize_merges_overlapping_and_touching_ranges() {
        let mut s = set(&[(10, 12), (1, 2), (3, 4), (11, 20), (30, 29)]);
        normalize(&mut s);
        assert_eq!(s, set(&[(1, 4), (10, 20)]));
        assert!(is_normal(&s));
        assert_eq!(count(&s), 4 + 11);
    }

    #[test]
    fn full_port_space_does_not_overflow() {
        let mut s = set(&[(0, 65535), (65535, 65535)]);
        normalize(&mut s);
        assert_eq!(s, set(&[(0, 65535)]));
        assert_eq!(count(&s), 65536);
        remove(&mut s, &[(65535, 65535)]);
        assert_eq!(s, set(&[(0, 65534)]));
    }

    #[test]
    fn contains_and_overlaps() {
        let s = set(&[(100, 200), (300, 400)]);
        assert!(contains(&s, &[(150, 160), (300, 300)]));
        assert!(!contains(&s, &[(150, 250)]));
        assert!(!contains(&s, &[(201, 201)]));
        assert!(contains_port(&s, 400));
        assert!(!contains_port(&s, 401));
        assert!(overlaps(&s, &[(250, 300)]));
        assert!(!overlaps(&s, &[(201, 299)]));
    }

    #[test]
    fn remove_splits_ranges() {
        let mut s = set(&[(100, 200), (300, 400)]);
        remove(&mut s, &[(150, 150), (190, 310), (400, 500)]);
        assert_eq!(s, set(&[(100, 149), (151, 189), (311, 399)]));
    }

    #[test]
    fn take_lowest_ports_and_put_them_back() {
        let mut s = set(&[(100, 101), (200, 210)]);
        let t = take(&mut s, 4).unwrap();
        assert_eq!(t, set(&[(100, 101), (200, 201)]));
        assert_eq!(s, set(&[(202, 210)]));
        assert_eq!(take(&mut s, 100), None);
        assert_eq!(s, set(&[(202, 210)]));
        add(&mut s, &t);
        assert_eq!(s, set(&[(100, 101), (200, 210)]));
        let t = take(&mut s, 2).unwrap();
        assert_eq!(t, set(&[(100, 101)]));
        assert_eq!(s, set(&[(200, 210)]));
    }

    #[test]
    fn add_appends_in_place_or_sorts_as_the_ranges_require() {
        let mut s = set(&[(100, 101)]);
        add(&mut s, &[(102, 102)]);
        assert_eq!(s, set(&[(100, 102)]));
        add(&mut s, &[(101, 105), (200, 201), (202, 202), (300, 299)]);
        assert_eq!(s, set(&[(100, 105), (200, 202)]));
        add(&mut s, &[(210, 210), (50, 60), (106, 106)]);
        assert_eq!(s, set(&[(50, 60), (100, 106), (200, 202), (210, 210)]));
        add(&mut s, &[(0, 65535)]);
        assert_eq!(s, set(&[(0, 65535)]));
    }

    /// `add` against its definition (extend and normalize), and `take` against what it promises (the `n`
    /// lowest ports, normal, the rest left), on pseudo-random sets: ranges in and out of order, touching,
    /// overlapping, empty, at the ends of the port space.
    #[test]
    fn add_and_take_keep_their_definitions() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |below: u32| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % u64::from(below)) as u32
        };
        let ranges = |next: &mut dyn FnMut(u32) -> u32| -> Vec<(u16, u16)> {
            (0..next(5))
                .map(|_| {
                    let begin = if next(8) == 0 { 65530 + next(6) } else { next(64) };
                    // One in five empty (`begin > end`), where it can be written.
                    let end =
                        if next(5) == 0 && begin > 0 { begin - 1 } else { (begin + next(6)).min(65535) };
                    (begin as u16, end as u16)
                })
                .collect()
        };
        for _ in 0..20_000 {
            let mut held = ranges(&mut next);
            normalize(&mut held);
            let other = ranges(&mut next);
            let mut expected = held.clone();
            expected.extend(other.iter().copied());
            normalize(&mut expected);
            let mut added = held.clone();
            add(&mut added, &other);
            assert_eq!(added, expected, "{held:?} + {other:?}");

            let mut free = other.clone();
            normalize(&mut free);
            let n = next(12);
            let mut left = free.clone();
            match take(&mut left, n) {
                Some(taken) => {
                    assert!(is_normal(&taken) && count(&taken) == u64::from(n), "{taken:?}");
                    let lowest_left = left.first().map(|r| r.0);
                    assert!(
                        taken.last().is_none_or(|r| lowest_left.is_none_or(|l| l > r.1)),
                        "{taken:?} {left:?}"
                    );
                    add(&mut left, &taken);
                    assert_eq!(left, free, "take {n} of {free:?}");
                }
                None => assert_eq!((count(&free) < u64::from(n), left), (true, free)),
            }
        }
    }

    #[test]
    fn bounds_split_back_into_each_entrys_ranges() {
        let entries = [set(&[]), set(&[(31000, 31001), (31005, 31005)]), set(&[(80, 80)])];
        let mut bounds = Vec::new();
        for ranges in &entries {
            push_bounds(&mut bounds, ranges);
        }
        assert_eq!(bounds, vec![31000, 31001, 31005, 31005, 80, 80]);
        let counts: Vec<u32> = entries.iter().map(|r| r.len() as u32).collect();
        assert_eq!(split_bounds::<(u16, u16)>(&counts, &bounds), Ok(entries.to_vec()));

        assert_eq!(split_bounds::<(u16, u16)>(&counts, &bounds[..5]), Err(BoundsError::Odd));
        assert_eq!(split_bounds::<(u16, u16)>(&[0, 2, 2], &bounds), Err(BoundsError::Short));
        assert_eq!(split_bounds::<(u16, u16)>(&[0, 2, u32::MAX], &bounds), Err(BoundsError::Short));
        assert_eq!(split_bounds::<(u16, u16)>(&[0, 2, 0], &bounds), Err(BoundsError::Unused));
    }
}
