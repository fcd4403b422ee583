//! Hostile: a valid component for some other host's world.
wit_bindgen::generate!({ path: "wit", world: "greeter" });

struct Greeter;
impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}
export!(Greeter);
