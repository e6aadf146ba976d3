//! From paxkv's commands and outcomes to the linearizability checker's model. Shared by the
//! integration tests (`tests/support`) and the protocol simulation (`src/paxos/sim.rs`), which
//! both include this file by path and have the four types in scope.

use super::{Command, Input, Outcome, Output};

pub fn input_of(command: &Command) -> Input {
    match command {
        Command::Get => Input::Get,
        Command::Put { value } => Input::Put {
            value: value.clone(),
        },
        Command::Delete => Input::Delete,
        Command::DeleteIf { expect } => Input::DeleteIf { expect: *expect },
        Command::Touch => Input::Touch,
        Command::Cas { expect, value } => Input::Cas {
            expect: *expect,
            value: value.clone(),
        },
        Command::LeasedWrite(w) => Input::LeasedWrite {
            expect: w.expect,
            value: w.value.clone(),
            lease: w.lease,
            fence: Some(w.fence),
        },
        Command::Release { lease } => Input::Release { lease: *lease },
        Command::LeaseAttach { key, max_keys } => Input::LeaseAttach {
            key: key.clone(),
            max_keys: *max_keys,
        },
        Command::LeaseEnd { expect } => Input::LeaseEnd { expect: *expect },
        Command::Inspect => Input::Inspect,
    }
}

pub fn output_of(outcome: Outcome) -> Output {
    match outcome {
        Outcome::Get { value, version } => Output::Get { value, version },
        Outcome::Put { version } => Output::Put { version },
        Outcome::Delete { deleted, version } => Output::Delete { deleted, version },
        Outcome::Cas { swapped, version } => Output::Cas { swapped, version },
        Outcome::Fenced { fence } => Output::Fenced { fence },
        Outcome::Inspect(found) => Output::Inspect {
            value: found.value,
            version: found.version,
            lease: found.lease,
            fence: found.fence,
        },
    }
}
