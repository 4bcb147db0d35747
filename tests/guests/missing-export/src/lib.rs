//! Test guest: a component that exports `init` but not `allocate`, which the host must refuse to load as
//! an allocator with an error naming `allocate`.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    inline: "
        package test:broken;

        world broken {
            export init: func(config: string) -> result<_, string>;
        }
    ",
});

struct Broken;

impl Guest for Broken {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
}

export!(Broken);
