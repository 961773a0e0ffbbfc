//! Rebuilds the server when a migration is added: `sqlx::migrate!` embeds the migrations at
//! compile time, and cargo does not otherwise see a new file in their directories.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
