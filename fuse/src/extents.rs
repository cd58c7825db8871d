//! Bytes written at offsets of a file, pure: for every byte the newest write of it, held as
//! non-overlapping runs (runs that touch are joined). An open file keeps what it wrote since
//! its last staging this way, so memory follows the bytes written, not the stripes touched.

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::Bytes;

/// Runs of written bytes by start offset.
#[derive(Debug, Default)]
pub struct Extents {
    runs: BTreeMap<u64, Vec<u8>>,
    bytes: u64,
    /// The unit runs are taken away in (a stripe), 0 when there is none.
    grain: u64,
}

impl Extents {
    /// Nothing written.
    pub fn new() -> Extents {
        Extents::default()
    }

    /// Runs are taken away a `grain` at a time from now on (`take_whole` of a stripe).
    pub fn set_grain(&mut self, grain: u64) {
        self.grain = grain;
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The starts of the runs that overlap or touch `range`, in order.
    fn touching(&self, range: Range<u64>) -> Vec<u64> {
        let mut starts: Vec<u64> = self
            .runs
            .range(..=range.end)
            .rev()
            .take_while(|(start, run)| **start + run.len() as u64 >= range.start)
            .map(|(start, _)| *start)
            .collect();
        starts.reverse();
        starts
    }

    /// `data` written at `offset`, over whatever was held there.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        let touching = self.touching(offset..end);
        let start = touching.first().map_or(offset, |s| (*s).min(offset));
        // The first run, when it starts at `start`, is extended in place (a sequential
        // writer appends to it without copying what it holds).
        let mut run = Vec::new();
        for other in touching {
            let older = self.take(other);
            if other == start && run.is_empty() {
                run = older;
            } else {
                place(&mut run, (other - start) as usize, &older);
            }
        }
        let need = (end - start) as usize;
        // A write of at least 1/64 of a grain comes from a streaming writer: its run gets room
        // to the end of the grain at once, instead of doubling (a copy of what it holds each
        // time, into freshly faulted pages).
        if self.grain > 0 && need > run.capacity() && data.len() as u64 >= self.grain / 64 {
            let grain_end = (start / self.grain + 1) * self.grain;
            let room = if end <= grain_end {
                grain_end - start
            } else {
                end - start
            };
            run.reserve_exact(room as usize - run.len());
        }
        place(&mut run, (offset - start) as usize, data);
        self.bytes += run.len() as u64;
        self.runs.insert(start, run);
    }

    /// `data` written at `offset` only where nothing is held (older bytes under newer ones).
    pub fn write_under(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        let mut gaps = Vec::new();
        let mut at = offset;
        for start in self.touching(offset..end) {
            let run_end = start + self.runs[&start].len() as u64;
            if start > at {
                gaps.push(at..start.min(end));
            }
            at = at.max(run_end);
        }
        if at < end {
            gaps.push(at..end);
        }
        for gap in gaps {
            let from = (gap.start - offset) as usize;
            let to = (gap.end - offset) as usize;
            self.write(gap.start, &data[from..to]);
        }
    }

    /// Copies the held bytes that fall within `at..at + buffer.len()` into `buffer`.
    pub fn overlay(&self, at: u64, buffer: &mut [u8]) {
        let end = at + buffer.len() as u64;
        for start in self.touching(at..end) {
            let run = &self.runs[&start];
            overlay_run(at, buffer, start, run);
        }
    }

    /// Whether any byte of `range` is held.
    pub fn overlaps(&self, range: Range<u64>) -> bool {
        !range.is_empty()
            && self
                .runs
                .range(..range.end)
                .next_back()
                .is_some_and(|(start, run)| start + run.len() as u64 > range.start)
    }

    /// Whether every byte of `range` is held.
    pub fn covers(&self, range: Range<u64>) -> bool {
        range.is_empty()
            || self
                .runs
                .range(..=range.start)
                .next_back()
                .is_some_and(|(start, run)| *start + run.len() as u64 >= range.end)
    }

    /// Drops the bytes at or past `size`.
    pub fn truncate(&mut self, size: u64) {
        let cut: Vec<u64> = self.runs.range(size..).map(|(s, _)| *s).collect();
        for start in cut {
            self.take(start);
        }
        if let Some((start, run)) = self.runs.range_mut(..size).next_back() {
            let keep = (size - *start) as usize;
            if run.len() > keep {
                self.bytes -= (run.len() - keep) as u64;
                run.truncate(keep);
            }
        }
    }

    /// Removes and returns the bytes of `range` when every one of them is held.
    pub fn take_whole(&mut self, range: Range<u64>) -> Option<Vec<u8>> {
        if range.is_empty() || !self.covers(range.clone()) {
            return None;
        }
        let (start, _) = self.runs.range(..=range.start).next_back()?;
        let start = *start;
        let mut run = self.take(start);
        let run_end = start + run.len() as u64;
        let tail = if range.end < run_end {
            run.split_off((range.end - start) as usize)
        } else {
            Vec::new()
        };
        let middle = if range.start > start {
            run.split_off((range.start - start) as usize)
        } else {
            std::mem::take(&mut run)
        };
        for (at, piece) in [(start, run), (range.end, tail)] {
            if !piece.is_empty() {
                self.bytes += piece.len() as u64;
                self.runs.insert(at, piece);
            }
        }
        Some(middle)
    }

    /// Removes and returns every run, in order.
    pub fn take_all(&mut self) -> Vec<(u64, Bytes)> {
        self.bytes = 0;
        std::mem::take(&mut self.runs)
            .into_iter()
            .map(|(start, run)| (start, Bytes::from(run)))
            .collect()
    }

    fn take(&mut self, start: u64) -> Vec<u8> {
        let run = self.runs.remove(&start).unwrap_or_default();
        self.bytes -= run.len() as u64;
        run
    }
}

/// Copies `run` (at `start`) where it falls within `at..at + buffer.len()` into `buffer`.
pub fn overlay_run(at: u64, buffer: &mut [u8], start: u64, run: &[u8]) {
    let end = at + buffer.len() as u64;
    let from = start.max(at);
    let to = (start + run.len() as u64).min(end);
    if from < to {
        buffer[(from - at) as usize..(to - at) as usize]
            .copy_from_slice(&run[(from - start) as usize..(to - start) as usize]);
    }
}

/// `data` put at `at` of `run`, which grows (with zeros) to hold it.
fn place(run: &mut Vec<u8>, at: usize, data: &[u8]) {
    if run.len() < at {
        run.resize(at, 0);
    }
    let over = (run.len() - at).min(data.len());
    run[at..at + over].copy_from_slice(&data[..over]);
    run.extend_from_slice(&data[over..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The model: a byte per offset, `None` where nothing was written.
    fn model_write(model: &mut Vec<Option<u8>>, offset: u64, data: &[u8], under: bool) {
        let end = offset as usize + data.len();
        if model.len() < end {
            model.resize(end, None);
        }
        for (i, b) in data.iter().enumerate() {
            let slot = &mut model[offset as usize + i];
            if !under || slot.is_none() {
                *slot = Some(*b);
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Write(u64, Vec<u8>),
        Under(u64, Vec<u8>),
        Truncate(u64),
        TakeWhole(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let data = (0u64..200, proptest::collection::vec(any::<u8>(), 0..40));
        prop_oneof![
            data.clone().prop_map(|(o, d)| Op::Write(o, d)),
            data.prop_map(|(o, d)| Op::Under(o, d)),
            (0u64..240).prop_map(Op::Truncate),
            (0u64..240, 0u64..40).prop_map(|(o, l)| Op::TakeWhole(o, l)),
        ]
    }

    proptest! {
        #[test]
        fn extents_hold_the_newest_byte_of_every_offset(
            ops in proptest::collection::vec(op(), 1..40),
            grain in prop_oneof![Just(0u64), 1u64..100],
        ) {
            let mut extents = Extents::new();
            extents.set_grain(grain);
            let mut model: Vec<Option<u8>> = Vec::new();
            for op in ops {
                match op {
                    Op::Write(o, d) => {
                        extents.write(o, &d);
                        model_write(&mut model, o, &d, false);
                    }
                    Op::Under(o, d) => {
                        extents.write_under(o, &d);
                        model_write(&mut model, o, &d, true);
                    }
                    Op::Truncate(size) => {
                        extents.truncate(size);
                        model.truncate(size as usize);
                    }
                    Op::TakeWhole(o, l) => {
                        let range = o..o + l;
                        let whole = l > 0 && (o..o + l).all(|i| model.get(i as usize).is_some_and(|b| b.is_some()));
                        let taken = extents.take_whole(range.clone());
                        prop_assert_eq!(taken.is_some(), whole);
                        if let Some(bytes) = taken {
                            let want: Vec<u8> = range.clone().map(|i| model[i as usize].unwrap()).collect();
                            prop_assert_eq!(bytes, want);
                            for i in range {
                                model[i as usize] = None;
                            }
                        }
                    }
                }
                let (a, b) = (extents.bytes() % 200, 7 + extents.bytes() % 50);
                let held_any = (a..a + b).any(|i| model.get(i as usize).is_some_and(|x| x.is_some()));
                prop_assert_eq!(extents.overlaps(a..a + b), held_any);
                // Every byte reads as the model's; runs neither overlap nor touch.
                let mut buffer = vec![0xEEu8; 260];
                extents.overlay(0, &mut buffer);
                for (i, b) in buffer.iter().enumerate() {
                    let want = model.get(i).copied().flatten().unwrap_or(0xEE);
                    prop_assert_eq!(*b, want, "offset {}", i);
                }
                let held = model.iter().filter(|b| b.is_some()).count() as u64;
                prop_assert_eq!(extents.bytes(), held);
                let mut last_end = None;
                for (start, run) in &extents.runs {
                    prop_assert!(!run.is_empty());
                    if let Some(end) = last_end {
                        prop_assert!(*start > end);
                    }
                    last_end = Some(start + run.len() as u64);
                }
            }
        }
    }

    #[test]
    fn a_sequential_writer_makes_one_run_taken_whole() {
        let mut extents = Extents::new();
        for i in 0..4u64 {
            extents.write(i * 10, &[i as u8; 10]);
        }
        assert_eq!(extents.runs.len(), 1);
        assert!(extents.covers(0..40));
        assert!(!extents.covers(0..41));
        let taken = extents.take_whole(10..30).expect("held");
        assert_eq!(taken, [[1u8; 10], [2u8; 10]].concat());
        assert_eq!(extents.bytes(), 20);
        assert_eq!(extents.take_all().len(), 2);
        assert_eq!(extents.bytes(), 0);
    }
}
