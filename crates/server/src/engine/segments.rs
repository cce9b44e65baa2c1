//! Planner batches over SERAM: where an order must end, and whether a report fits it.
//!
//! The planner's contract is that the agent stops after the first answer outside a command's
//! `accept` list. A SERAM local agent does not: the binding has no such notion, and the
//! Overview tells the agent to send every C-APDU of an SE RAM command and to stop only when
//! one *cannot be transmitted*. The engine therefore sends a batch in **segments**: an order
//! ends after a command whose refusal lets the plan go on differently (a *cut point*), so that
//! the card never runs commands the plan would not have sent. A refusal anywhere else ends the
//! plan anyway, and what the agent ran after it is recorded and makes the TSM read the card
//! again ([`Fit::ran_on`]).
//!
//! Cut points (see `planner::machine`: the answers it does not treat as the end):
//! - GET STATUS (`6310` next page, a refused format's fallback),
//! - GET DATA (the counter read; a card without it is not an error),
//! - INSTALL [for load] when the TSM's view of the card may be stale (a refusal as for a load
//!   file already present makes the plan drop LOAD). With a current view it is not a cut: the
//!   deployment stays one round trip.

use crate::planner::Batch;

/// Whether a refusal of command `i` may let the plan continue (the order must end there).
pub fn is_cut(batch: &Batch, i: usize, view_trusted: bool) -> bool {
    let name = batch.commands.get(i).map(|c| c.name.as_str()).unwrap_or("");
    name.starts_with("GET STATUS") || name.starts_with("GET DATA") || (!view_trusted && name.starts_with("INSTALL [for load]"))
}

/// The end (exclusive) of the segment that starts at `from`.
pub fn segment_end(batch: &Batch, from: usize, view_trusted: bool) -> usize {
    let n = batch.len();
    (from..n).find(|&i| is_cut(batch, i, view_trusted)).map_or(n, |i| i + 1)
}

/// The status word of a wire R-APDU (its last two bytes).
pub fn sw(r: &[u8]) -> Option<u16> {
    (r.len() >= 2).then(|| u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]))
}

/// A report's answers to a segment, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    /// Index (in the batch) of the first answer outside its command's `accept` list.
    pub stop: Option<usize>,
    /// The agent went on after that answer (a SERAM agent does): the card ran commands the
    /// plan did not mean to send.
    pub ran_on: bool,
}

/// Checks `answers` (to the batch's commands `from..to`, in order) and says where the agent
/// should have stopped. A report that cannot be an answer to the segment is an error.
pub fn fit(batch: &Batch, from: usize, to: usize, answers: &[Vec<u8>]) -> Result<Fit, String> {
    let len = to - from;
    if answers.is_empty() {
        return Err(format!("no R-APDU for an SE RAM command of {len} C-APDU(s)"));
    }
    if answers.len() > len {
        return Err(format!("{} R-APDUs for an SE RAM command of {len} C-APDU(s)", answers.len()));
    }
    let mut stop = None;
    for (k, r) in answers.iter().enumerate() {
        let i = from + k;
        let Some(sw) = sw(r) else {
            return Err(format!("R-APDU {} ({}) is shorter than a status word", k + 1, tsm_gp::hex::encode(r)));
        };
        if stop.is_none() && !batch.accepts(i, sw) {
            stop = Some(i);
        }
    }
    if answers.len() < len && stop.is_none_or(|s| s != from + answers.len() - 1) {
        return Err(format!("{} R-APDUs for {len} C-APDUs, and the last one ({}) is not a refusal that stops the agent", answers.len(), tsm_gp::hex::encode(answers.last().expect("not empty"))));
    }
    let ran_on = stop.is_some_and(|s| s + 1 < from + answers.len());
    Ok(Fit { stop, ran_on })
}

/// Names of commands that do not change the card.
pub fn changes_card(name: &str) -> bool {
    !["SELECT", "INITIALIZE UPDATE", "EXTERNAL AUTHENTICATE", "GET DATA", "GET STATUS"].iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::BatchCommand;

    fn batch(names: &[&str]) -> Batch {
        Batch { commands: names.iter().map(|n| BatchCommand { apdu: vec![0x80, 0xE6, 0, 0], name: n.to_string(), accept: vec![0x9000] }).collect() }
    }

    #[test]
    fn cuts() {
        let b = batch(&["SELECT A0", "INITIALIZE UPDATE (x)", "EXTERNAL AUTHENTICATE (x)", "INSTALL [for load] D0", "LOAD block 1/2", "LOAD block 2/2", "INSTALL [for install] D1"]);
        assert_eq!(segment_end(&b, 0, true), 7, "a current view sends the whole batch");
        assert_eq!(segment_end(&b, 0, false), 4, "a stale view ends the order after INSTALL [for load]");
        assert_eq!(segment_end(&b, 4, false), 7);
        let r = batch(&["SELECT A0", "INITIALIZE UPDATE", "EXTERNAL AUTHENTICATE", "GET STATUS [ISD] P1=80 tagged", "GET STATUS [apps] P1=40 tagged", "GET STATUS P1=10"]);
        assert_eq!(segment_end(&r, 0, true), 4);
        assert_eq!(segment_end(&r, 4, true), 5);
        assert_eq!(segment_end(&r, 5, true), 6);
        assert!(changes_card("INSTALL [for load] D0") && !changes_card("GET STATUS x") && !changes_card("SELECT A0"));
    }

    #[test]
    fn fits() {
        let b = batch(&["A", "B", "C"]);
        let ok = vec![0x90, 0x00];
        let bad = vec![0x6A, 0x80];
        assert_eq!(fit(&b, 0, 3, &[ok.clone(), ok.clone(), ok.clone()]).unwrap(), Fit { stop: None, ran_on: false });
        assert_eq!(fit(&b, 0, 3, &[ok.clone(), bad.clone()]).unwrap(), Fit { stop: Some(1), ran_on: false }, "an agent that stops");
        assert_eq!(fit(&b, 0, 3, &[bad.clone(), ok.clone(), ok.clone()]).unwrap(), Fit { stop: Some(0), ran_on: true }, "a SERAM agent goes on");
        assert_eq!(fit(&b, 1, 3, &[ok.clone(), bad.clone()]).unwrap(), Fit { stop: Some(2), ran_on: false });
        assert!(fit(&b, 0, 3, &[]).is_err());
        assert!(fit(&b, 0, 3, &[ok.clone(), ok.clone()]).is_err(), "fewer answers without a refusal");
        assert!(fit(&b, 0, 2, &[ok.clone(), ok.clone(), ok.clone()]).is_err(), "more answers than commands");
        assert!(fit(&b, 0, 3, &[vec![0x90]]).is_err(), "no status word");
    }
}
