//! Progress per protocol step: a live bar on a terminal, plain lines otherwise (logs, CI, pipes).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Shows steps as they run.
pub struct Progress {
    tty: bool,
}

/// One step (a protocol run), with its rounds.
pub struct Step {
    name: String,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(tty: bool) -> Self {
        Progress { tty }
    }

    pub fn step(&mut self, name: &str, rounds: u8) -> Step {
        let bar = self.tty.then(|| {
            let bar = ProgressBar::new(u64::from(rounds));
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {msg:40} round {pos}/{len} {elapsed}")
            {
                bar.set_style(style);
            }
            bar.set_message(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        if bar.is_none() {
            eprintln!("{name} ...");
        }
        Step {
            name: name.to_string(),
            bar,
        }
    }
}

impl Step {
    pub fn round(&self, round: u8, total: u8) {
        match &self.bar {
            Some(bar) => bar.set_position(u64::from(round)),
            None => eprintln!("  round {round}/{total} done"),
        }
    }

    pub fn finish(&self, took: Duration) {
        let line = if took.is_zero() {
            format!("{}: done", self.name)
        } else {
            format!("{}: done in {:.2} s", self.name, took.as_secs_f64())
        };
        match &self.bar {
            Some(bar) => {
                bar.finish_and_clear();
                eprintln!("✔ {line}");
            }
            None => eprintln!("{line}"),
        }
    }
}
