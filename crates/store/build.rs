//! `sqlx::migrate!` embeds `migrations/` at compile time; without this, cargo would not notice a
//! new migration file and keep an older set in incremental builds.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
