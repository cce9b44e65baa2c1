fn main() {
    println!("tsm");
}
