//! The streaming run of `tune_stream` with checkpoints, cut by a reset and resumed.
//!
//! Every 16 outer steps the run writes a checkpoint (solver, `ln λ`, stream position,
//! oracle calls; postcard) through `bilevel::checkpoint::Slots` into two alternating slots of
//! a NOR flash kept in RAM that survives a reset (`src/retained.rs`). On the first boot (no
//! valid checkpoint) the firmware cuts the power in the middle of the 7th checkpoint write,
//! before outer step 112: the flash resets the core (`SCB::sys_reset`) halfway through the
//! payload, leaving a torn record. After the reset it finds the newest valid checkpoint (the
//! 6th, step 96), resumes, finishes, and prints the same result and bits as `tune_stream`.
//! Lines that only this firmware prints start with `resume:` or `device:`.
#![no_std]
#![no_main]

use core::fmt::Write;
use core::mem::size_of;

use bilevel_cortex_m_examples::retained::RetainedFlash;
use bilevel_cortex_m_examples::scenario::{
    self, CHECKPOINT_FLASH_BYTES, Failure, ResumeEvent, STREAM_CHECKPOINT_BYTES, StreamCheckpoint,
};
use bilevel_cortex_m_examples::{HostOut, run_on_host, stack, write_memory_report};
use cortex_m_rt::entry;

bilevel_cortex_m_examples::semihosting_panic_handler!();

/// The checkpoint write the first boot does not survive.
const CUT_AT_STEP: u32 = 112;

fn run(out: &mut HostOut) -> Result<(), Failure> {
    let mut flash = RetainedFlash::take().ok_or(Failure::Check {
        what: "retained flash taken once",
    })?;
    let base = flash.address();
    stack::repaint();
    let mut fresh = false;
    let result = scenario::stream_resumable(&mut flash, |event, flash| {
        match event {
            ResumeEvent::Fresh => {
                fresh = true;
                writeln!(
                    out,
                    "resume: boot: no valid checkpoint at {base:#010x}, starting at step 0"
                )?;
            }
            ResumeEvent::Resumed { sequence, step } => {
                writeln!(
                    out,
                    "resume: boot: checkpoint {sequence} found, resuming at step {step}"
                )?;
            }
            ResumeEvent::Saving { step, bytes } if fresh && step == CUT_AT_STEP => {
                // Erase the slot, then half the payload: the reset lands inside the write.
                let cut = scenario::CHECKPOINT_SLOT_BYTES as usize + bytes / 2;
                writeln!(
                    out,
                    "resume: step {step}: writing a checkpoint of {bytes} B, power cut after {cut} B of erase and write"
                )?;
                flash.cut_power_after(cut);
            }
            ResumeEvent::Saving { .. } => {}
            ResumeEvent::Saved { sequence, step } => {
                writeln!(out, "resume: step {step}: checkpoint {sequence} written")?;
            }
        }
        Ok(())
    });
    let used = stack::high_water();
    let result = result?;
    if fresh {
        return Err(Failure::Check {
            what: "the run was cut by a reset and resumed",
        });
    }
    scenario::write_stream_result(out, &result)?;
    writeln!(
        out,
        "device: size_of StreamCheckpoint {} B, encoded at most {STREAM_CHECKPOINT_BYTES} B",
        size_of::<StreamCheckpoint>()
    )?;
    writeln!(
        out,
        "device: retained flash {CHECKPOINT_FLASH_BYTES} B (.uninit) at {base:#010x}"
    )?;
    write_memory_report(out, used)?;
    Ok(())
}

#[entry]
fn main() -> ! {
    run_on_host(run)
}
