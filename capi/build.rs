//! Generates one `bl_method_<name>` symbol per method of the registry (Rust statics in
//! `OUT_DIR/methods.rs`, their declarations at the end of the header) and `include/bilevel.h`
//! from the exported items (the header is committed; CI checks that it is up to date).
use std::fmt::Write as _;
use std::{env, error::Error, path::Path};

use bilevel::registry::{Initial, Method};

fn main() -> Result<(), Box<dyn Error>> {
    let dir = env::var("CARGO_MANIFEST_DIR")?;
    let mut rust = String::new();
    let mut c = String::from(
        "\n/* The methods: pass &bl_method_<name> in BlConfig.method. */\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n",
    );
    for &m in Method::ALL {
        let info = m.info();
        let ident = format!("bl_method_{}", info.name.replace('-', "_"));
        let spec = m.spec_path().replace(' ', "").replacen("crate::", "bilevel::", 1);
        writeln!(rust, "/// `{}` ({}): {}.", info.name, info.family.name(), info.summary)?;
        writeln!(rust, "#[allow(non_upper_case_globals)]\n#[unsafe(no_mangle)]")?;
        writeln!(
            rust,
            "pub static {ident}: BlMethod = BlMethod::of::<{spec}>(Method::{m:?}, c\"{}\");",
            info.name
        )?;
        let settings: Vec<String> = info
            .settings
            .iter()
            .map(|s| {
                let default = match s.initial {
                    Initial::Value(v) => format!("{v}"),
                    Initial::OverLipschitz(k) => format!("{k}/L"),
                    Initial::TimesLipschitz(k) => format!("{k}*L"),
                };
                format!("{} ({default})", s.key)
            })
            .collect();
        let settings = if settings.is_empty() {
            "none".to_string()
        } else {
            settings.join(", ")
        };
        writeln!(
            c,
            "\n/**\n * {} ({}): {}.\n * Settings: {settings}.\n */",
            info.name,
            info.family.name(),
            info.summary
        )?;
        writeln!(c, "extern const BlMethod {ident};")?;
    }
    c.push_str("\n#ifdef __cplusplus\n}  // extern \"C\"\n#endif\n");
    std::fs::write(Path::new(&env::var("OUT_DIR")?).join("methods.rs"), rust)?;
    let mut config = cbindgen::Config::from_file("cbindgen.toml")?;
    config.trailer = Some(c);
    cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()?
        .write_to_file("include/bilevel.h");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    Ok(())
}
