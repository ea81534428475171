//! A seeded shuffle buffer that can be resumed: the stream is read in blocks of `size`
//! records, each block permuted by a generator seeded from (seed, epoch, block), and
//! emitted. A position is the reader's position at the block's start and the records taken
//! from the block, so a resumed stream reads the block again, permutes it the same way and
//! skips what was taken: the same records in the same order, reading one block at most.
//! `size` 0 keeps file order.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::{ReadPosition, Reader, SourcePosition};
use crate::records::{DataError, Record, Skipped};

pub struct Shuffled {
    reader: Box<dyn Reader>,
    size: usize,
    seed: u64,
    /// The current block, last record first (so records are popped).
    buffer: Vec<Record>,
    block_start: ReadPosition,
    /// The reader's bad records before the current block (re-reading the block finds its
    /// own again).
    block_skipped: Skipped,
    /// Blocks started in this epoch.
    block: u64,
    taken: usize,
}

/// SplitMix64's finaliser, to derive unrelated seeds from related numbers.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Shuffled {
    pub fn new(reader: Box<dyn Reader>, size: usize, seed: u64) -> Self {
        let block_start = reader.position();
        Self {
            reader,
            size,
            seed,
            buffer: Vec::new(),
            block_start,
            block_skipped: Skipped::default(),
            block: 0,
            taken: 0,
        }
    }

    /// Reads the next block and permutes it; `false` at the end of the epoch.
    fn fill(&mut self) -> Result<bool, DataError> {
        self.block_start = self.reader.position();
        self.block_skipped = self.reader.skipped();
        let mut block = Vec::with_capacity(self.size);
        while block.len() < self.size {
            match self.reader.next_record() {
                Some(r) => block.push(r?),
                None => break,
            }
        }
        if block.is_empty() {
            return Ok(false);
        }
        let mut rng = StdRng::seed_from_u64(mix(mix(self.seed ^ mix(self.block_start.epoch)) ^ self.block));
        block.shuffle(&mut rng);
        block.reverse();
        self.buffer = block;
        self.block += 1;
        self.taken = 0;
        Ok(true)
    }

    pub fn next_record(&mut self) -> Option<Result<Record, DataError>> {
        if self.size == 0 {
            return self.reader.next_record();
        }
        if self.buffer.is_empty() {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
        self.taken += 1;
        self.buffer.pop().map(Ok)
    }

    pub fn position(&self) -> SourcePosition {
        if self.size == 0 {
            return SourcePosition {
                read: self.reader.position(),
                skipped: self.reader.skipped(),
                ..Default::default()
            };
        }
        if self.buffer.is_empty() {
            // Between blocks: the next block starts where the reader is.
            return SourcePosition {
                read: self.reader.position(),
                block: self.block,
                taken: 0,
                skipped: self.reader.skipped(),
            };
        }
        SourcePosition {
            read: self.block_start,
            block: self.block - 1,
            taken: self.taken,
            skipped: self.block_skipped.clone(),
        }
    }

    pub fn seek(&mut self, at: &SourcePosition) -> Result<(), DataError> {
        self.buffer.clear();
        self.reader.seek(at.read)?;
        self.reader.set_skipped(at.skipped.clone());
        self.block = at.block;
        self.taken = 0;
        if self.size > 0 && at.taken > 0 {
            self.fill()?;
            for _ in 0..at.taken {
                self.buffer.pop();
            }
            self.taken = at.taken;
        }
        Ok(())
    }

    pub fn skipped(&self) -> Skipped {
        self.reader.skipped()
    }
}
