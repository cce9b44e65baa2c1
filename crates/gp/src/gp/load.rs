//! LOAD (GPCS 2.3 §11.6): the load file (optional DAP blocks `E2`, then the Load File Data
//! Block `C4`, or `D4` when ciphered), its split into numbered blocks, and its reassembly on
//! the card side.

use super::{Aid, Context, Framing, GpError, check_gp, ins};
use crate::apdu::CommandApdu;
use crate::codec::Reader;
use crate::hex::Hex;
use crate::tlv::{self, TlvIter, TlvRef};
use std::fmt;

/// One LOAD command: P1 b8 = last block, P2 = block number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    pub last: bool,
    pub block: u8,
    pub data: Vec<u8>,
    pub framing: Framing,
}

impl Load {
    pub fn to_apdu(&self) -> CommandApdu {
        self.framing.apdu(ins::LOAD, if self.last { 0x80 } else { 0x00 }, self.block, self.data.clone())
    }

    pub fn from_apdu(apdu: &CommandApdu) -> Result<Self, GpError> {
        const C: &str = "LOAD";
        check_gp(apdu, C, ins::LOAD)?;
        if apdu.p1 & 0x7F != 0 {
            return Err(GpError::params(C, apdu, "P1 is 00 (more blocks) or 80 (last block)"));
        }
        Ok(Load { last: apdu.p1 & 0x80 != 0, block: apdu.p2, data: apdu.data.clone(), framing: Framing::of(apdu) })
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LOAD block {}{} ({} bytes)", self.block, if self.last { " (last)" } else { "" }, self.data.len())
    }
}

/// Splits a load file into LOAD commands whose data field holds at most `max_block` bytes
/// (the caller leaves room for the secure channel's MAC and padding). Block numbers run from
/// 0; there can be at most 256 blocks.
pub fn split_load_file(load_file: &[u8], max_block: usize) -> Result<Vec<Load>, GpError> {
    if max_block == 0 {
        return Err(GpError::LoadSequence { detail: "block size of 0".into() });
    }
    if load_file.is_empty() {
        return Err(GpError::LoadSequence { detail: "empty load file".into() });
    }
    let n = load_file.len().div_ceil(max_block);
    if n > 256 {
        return Err(GpError::LoadSequence {
            detail: format!("{} bytes need {n} blocks of {max_block}; P2 numbers at most 256 blocks", load_file.len()),
        });
    }
    Ok(load_file
        .chunks(max_block)
        .enumerate()
        .map(|(i, c)| Load { last: i + 1 == n, block: i as u8, data: c.to_vec(), framing: Framing::GP_LE })
        .collect())
}

/// Collects LOAD blocks on the card side: checks numbering and returns the load file after
/// the last block.
#[derive(Debug, Clone, Default)]
pub struct LoadAssembler {
    next: usize,
    data: Vec<u8>,
    done: bool,
}

impl LoadAssembler {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a block; `Some(load file)` once the last block arrived.
    pub fn push(&mut self, block: &Load) -> Result<Option<Vec<u8>>, GpError> {
        if self.done {
            return Err(GpError::LoadSequence { detail: "block after the last block".into() });
        }
        if block.block as usize != self.next {
            return Err(GpError::LoadSequence { detail: format!("expected block {}, got {}", self.next, block.block) });
        }
        self.next += 1;
        self.data.extend_from_slice(&block.data);
        if block.last {
            self.done = true;
            return Ok(Some(std::mem::take(&mut self.data)));
        }
        Ok(None)
    }
}

/// A DAP block (`E2`): a security domain's signature over the load file data block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DapBlock {
    /// `4F`
    pub sd: Aid,
    /// `C3`
    pub signature: Vec<u8>,
}

/// A load file as LOAD transports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFile {
    pub dap_blocks: Vec<DapBlock>,
    /// The Load File Data Block (CAP components).
    pub lfdb: Vec<u8>,
    /// Sent under tag `D4` (ciphered LFDB) instead of `C4`.
    pub ciphered: bool,
}

impl LoadFile {
    pub fn new(lfdb: Vec<u8>) -> Self {
        LoadFile { dap_blocks: Vec::new(), lfdb, ciphered: false }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for d in &self.dap_blocks {
            let mut v = Vec::new();
            tlv::put(&mut v, 0x4F, d.sd.as_bytes());
            tlv::put(&mut v, 0xC3, &d.signature);
            tlv::put(&mut out, 0xE2, &v);
        }
        tlv::put(&mut out, if self.ciphered { 0xD4 } else { 0xC4 }, &self.lfdb);
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, GpError> {
        const W: &str = "load file";
        let mut r = Reader::new(bytes);
        let mut dap_blocks = Vec::new();
        loop {
            if r.is_empty() {
                return Err(GpError::MissingTag { what: W, tag: tlv::Tag(0xC4) });
            }
            let t = TlvRef::read(&mut r).ctx(W)?;
            match t.tag.0 {
                0xE2 => {
                    let (mut sd, mut sig) = (None, None);
                    for c in TlvIter::new(t.value) {
                        let c = c.ctx(W)?;
                        match c.tag.0 {
                            0x4F => sd = Some(Aid::from_slice_for(c.value, "DAP block SD AID")?),
                            0xC3 => sig = Some(c.value.to_vec()),
                            _ => return Err(GpError::invalid(W, format!("unexpected tag {} in DAP block", c.tag))),
                        }
                    }
                    let sd = sd.ok_or(GpError::MissingTag { what: "DAP block", tag: tlv::Tag(0x4F) })?;
                    let signature = sig.ok_or(GpError::MissingTag { what: "DAP block", tag: tlv::Tag(0xC3) })?;
                    dap_blocks.push(DapBlock { sd, signature });
                }
                0xC4 | 0xD4 => {
                    r.expect_end(W).ctx(W)?;
                    return Ok(LoadFile { dap_blocks, lfdb: t.value.to_vec(), ciphered: t.tag.0 == 0xD4 });
                }
                _ => return Err(GpError::UnexpectedTag { what: W, expected: tlv::Tag(0xC4), found: t.tag }),
            }
        }
    }

    /// The LOAD commands for this file.
    pub fn blocks(&self, max_block: usize) -> Result<Vec<Load>, GpError> {
        split_load_file(&self.to_bytes(), max_block)
    }
}

impl fmt::Display for LoadFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.dap_blocks {
            write!(f, "DAP[{} {}] ", d.sd, Hex(&d.signature))?;
        }
        write!(f, "{} {} bytes", if self.ciphered { "D4" } else { "C4" }, self.lfdb.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_assemble() {
        let lf = LoadFile {
            dap_blocks: vec![DapBlock { sd: Aid::GP_ISD, signature: vec![0x11; 8] }],
            lfdb: (0..=255u8).cycle().take(600).collect(),
            ciphered: false,
        };
        let blocks = lf.blocks(200).unwrap();
        assert_eq!(blocks.len(), 4);
        assert!(blocks[3].last && !blocks[2].last);
        let mut asm = LoadAssembler::new();
        let mut out = None;
        for b in &blocks {
            assert_eq!(&Load::from_apdu(&b.to_apdu()).unwrap(), b);
            out = asm.push(b).unwrap();
        }
        assert_eq!(LoadFile::parse(&out.unwrap()).unwrap(), lf);
        assert!(asm.push(&blocks[0]).is_err());
        let mut asm = LoadAssembler::new();
        assert!(asm.push(&blocks[1]).is_err());
        assert!(split_load_file(&[0; 300], 1).is_err());
        assert!(LoadFile::parse(&[0xE2, 0x00]).is_err());
    }
}
