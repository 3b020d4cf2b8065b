//! A runtime (or an init) SIGKILLed at any phase of create or run leaves
//! nothing that `delete --force` cannot clear: no cgroup, mount, process or
//! state.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

const CREATE_PHASES: [&str; 11] = [
    "config loaded",
    "clone",
    "cloned",
    "cgroup ready",
    "init: namespaces",
    "init: mounts",
    "init: cgroup joined",
    "init: root finished",
    "init: process prepared",
    "init ready",
    "created",
];

#[test]
fn a_create_killed_at_any_phase_is_cleaned_up() {
    for phase in CREATE_PHASES {
        let mut s = Setup::new("crash");
        s.bundle.set_args(&["sleep", "300"]);
        s.bundle.save();
        let (out, err) = hako_testutil::Runtime::output_files(&s.bundle, &s.id);
        let status = s
            .cmd()
            .env("HAKO_RUNTIME_CRASH_AT", phase)
            .args([
                "create",
                "--bundle",
                s.bundle.dir().to_str().unwrap(),
                &s.id,
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        // Killed, or failed because its init was; "created" dies after
        // the work is done.
        assert!(
            !status.success() || phase == "created",
            "{phase}: {status:?}"
        );
        // Whatever is left, state and delete --force deal with it.
        let st = s.cmd().args(["state", &s.id]).output().unwrap();
        assert!(
            st.status.success() || stderr(&st).contains("does not exist"),
            "{phase}: {}",
            stderr(&st)
        );
        s.force_delete();
        let left: Vec<_> = std::fs::read_dir(s.rt.root())
            .unwrap()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{phase}: state left: {left:?}");
        s.finish();
    }
}

#[test]
fn a_run_killed_while_the_container_runs_is_cleaned_up() {
    for phase in ["program exec'd", "exited"] {
        let mut s = Setup::new("crashrun");
        s.bundle.set_args(&[
            "sh",
            "-c",
            if phase == "exited" {
                "true"
            } else {
                "sleep 300"
            },
        ]);
        s.bundle.save();
        let out = s
            .cmd()
            .env("HAKO_RUNTIME_CRASH_AT", phase)
            .args(["run", "--bundle", s.bundle.dir().to_str().unwrap(), &s.id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!out.success(), "{phase}");
        let st = s.rt.state(&s.id);
        let want = if phase == "exited" {
            "stopped"
        } else {
            "running"
        };
        assert_eq!(st["status"], want, "{phase}");
        s.force_delete();
        s.finish();
    }
}
