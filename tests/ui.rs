//! The web pages in a real browser: Debian's headless Chromium driven through WebDriver
//! (chromedriver, fantoccini; see `harness/browser.rs`). Where the browser or the driver is
//! missing the tests say so and pass (`.ci/run` installs both where apt is available).
//!
//! - The agent's `/ui`: three agents with an admin token; the token typed once; three alive
//!   rows; one agent SIGKILLed: its row turns failed without a reload within the detection
//!   time + 2 s; restarted: alive again; a partition set from the page's chaos form is what
//!   `dcore chaos get` shows; every request stayed on the agent, and the page weighs < 150 KB.
//! - `dcore local --nodes 5 --ui`: the matrix shows 25 cells alive; the kill button of a node
//!   turns its column failed.
//!
//! Screenshots land in `target/ui-screenshots/` (and in `$DCORE_UI_SCREENSHOTS`, e.g.
//! `docs/images`, to refresh the pictures in docs/operations.md).

#[path = "harness/browser.rs"]
mod browser;
mod harness;

use browser::Browser;
use distributed_core::cluster::Config;
use harness::{dcore_command, eventually, Bed, KillOnDrop, Lines};
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Longest any awaited change may take.
const DEADLINE: Duration = Duration::from_secs(60);

const TOKEN: &str = "ui-test-token-5b1e";

/// The browser's driver, or `None` after printing why the test does not run.
fn driver() -> Option<std::path::PathBuf> {
    match browser::available() {
        Ok(d) => Some(d),
        Err(why) => {
            eprintln!("notice: browser test skipped: {why}");
            None
        }
    }
}

/// Counts the member table's rows in `state` (every row when `None`) by name.
async fn rows(b: &Browser) -> serde_json::Value {
    b.js("const r = {};
          for (const tr of document.querySelectorAll('#members tbody tr'))
            r[tr.dataset.name] = tr.dataset.state;
          return r;")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_page_follows_a_crash_and_a_restart_and_sets_a_partition() {
    let Some(driver) = driver() else { return };
    let _serial = harness::serial().await;
    let mut bed = Bed::loopback(3).with_token(TOKEN);
    bed.start_all();
    let every = [0, 1, 2];
    eventually("every agent sees every agent alive", DEADLINE, async || {
        bed.all_see(&every, &every, "alive")
    })
    .await;

    let b = Browser::start(&driver).await;
    let page = format!("http://{}/ui", bed.http(0));
    b.client.goto(&page).await.unwrap();
    b.record_requests().await;
    // Without the token the page asks for it.
    eventually("the page asks for the token", DEADLINE, async || {
        b.js("return !document.getElementById('notice').hidden")
            .await
            == true
    })
    .await;
    b.type_into("#token", TOKEN).await;
    b.click("#token-form button").await;
    eventually("three alive rows", DEADLINE, async || {
        let r = rows(&b).await;
        let alive = ["h1", "h2", "h3"].iter().all(|n| r[*n] == "alive");
        if alive {
            Ok(())
        } else {
            Err(r.to_string())
        }
    })
    .await;
    // A mark on the document: still there later means the page was never reloaded.
    b.js("document.body.dataset.mark = 'same-page'; return true;")
        .await;

    bed.kill(2);
    let killed = Instant::now();
    // The bed's agents run the `local` preset (tests/fixtures/agent-local.toml).
    let bound = harness::detection_time(&Config::local(), 3) + Duration::from_secs(2);
    eventually("h3's row turns failed", DEADLINE, async || {
        let r = rows(&b).await;
        if r["h3"] == "failed" {
            Ok(())
        } else {
            Err(r.to_string())
        }
    })
    .await;
    let took = killed.elapsed();
    eprintln!(
        "UI {{\"crash_to_failed_row_ms\": {}, \"bound_ms\": {}}}",
        took.as_millis(),
        bound.as_millis()
    );
    assert!(
        took <= bound,
        "h3 shown failed after {took:?}, more than the detection time + 2 s ({bound:?})"
    );
    let mark = b.js("return document.body.dataset.mark || null;").await;
    assert_eq!(mark, "same-page", "the page was reloaded");
    let timeline = b
        .js("return document.getElementById('timeline').textContent;")
        .await;
    assert!(
        timeline.as_str().unwrap().contains("h3 failed"),
        "timeline: {timeline}"
    );

    bed.start(2, Some(0));
    eventually("h3's row turns alive again", DEADLINE, async || {
        let r = rows(&b).await;
        if r["h3"] == "alive" {
            Ok(())
        } else {
            Err(r.to_string())
        }
    })
    .await;

    // A partition from h2, set from the page.
    b.click("#chaos-members input[value='h2']").await;
    b.click("#chaos-set").await;
    let h2 = bed.hosts[1].gossip.clone();
    eventually(
        "dcore chaos get shows the partition",
        DEADLINE,
        async || {
            let out = bed.dcore(0, &["chaos", "get"])?;
            let on = out.contains("chaos: on") && out.contains(&format!("\"blocked\":[\"{h2}\"]"));
            if on {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .await;
    // The picture for docs/operations.md: the crash and the restart in the timeline, the
    // partition in the chaos panel, some seconds of charts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    b.client.set_window_size(1280, 1400).await.unwrap();
    b.screenshot("ui-agent.png").await;
    b.click("#chaos-clear").await;
    eventually("the page clears it", DEADLINE, async || {
        let out = bed.dcore(0, &["chaos", "get"])?;
        if out.contains("chaos: off") {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;

    let seen = b
        .requests_stayed_on(&format!("http://{}/", bed.http(0)))
        .await;
    let weight: u64 = (seen.iter())
        .filter(|(_, kind, _)| kind != "fetch")
        .map(|(_, _, bytes)| bytes)
        .sum();
    let fetches = seen.iter().filter(|(_, kind, _)| kind == "fetch").count();
    eprintln!(
        "UI {{\"page_bytes\": {weight}, \"requests\": {}, \"fetches\": {fetches}}}",
        seen.len()
    );
    assert!(
        weight > 0 && weight < 150 * 1024,
        "page weight {weight} bytes"
    );
    b.client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_page_shows_the_matrix_and_its_kill_button_fails_a_column() {
    let Some(driver) = driver() else { return };
    let _serial = harness::serial().await;
    let mut child = KillOnDrop(
        dcore_command()
            .args(["local", "--nodes", "5", "--ui"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dcore local starts"),
    );
    let out = Lines::new(child.stdout.take().unwrap());
    let page = out
        .wait_for(DEADLINE, |l| l.strip_prefix("page: ").map(str::to_string))
        .unwrap_or_else(|e| panic!("no page address ({e}):\n{}", out.text()));

    let b = Browser::start(&driver).await;
    b.client.goto(&page).await.unwrap();
    b.record_requests().await;
    let cells = async |b: &Browser, state: &str| -> Vec<(String, String)> {
        let v = b
            .js(&format!(
                "return [...document.querySelectorAll('#matrix td.cell[data-state=\"{state}\"]')]
                   .map((td) => [td.dataset.observer, td.dataset.target]);"
            ))
            .await;
        (v.as_array().unwrap().iter())
            .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
            .collect()
    };
    eventually("25 cells alive", DEADLINE, async || {
        let alive = cells(&b, "alive").await;
        if alive.len() == 25 {
            Ok(())
        } else {
            Err(format!("{} alive", alive.len()))
        }
    })
    .await;

    b.click("button[data-command='kill n2']").await;
    eventually("n2's column failed", DEADLINE, async || {
        let failed = cells(&b, "failed").await;
        let column: Vec<_> = failed.iter().filter(|(_, t)| t == "n2").collect();
        if column.len() == 4 {
            Ok(())
        } else {
            Err(format!("failed cells: {failed:?}"))
        }
    })
    .await;
    let row = b
        .js("return document.querySelector('#matrix tr[data-node=\"n2\"]').dataset.status;")
        .await;
    assert_eq!(row, "killed");
    b.screenshot("ui-local.png").await;

    b.requests_stayed_on(&page).await;
    b.client.close().await.unwrap();
    let _ = writeln!(child.stdin.as_mut().unwrap(), "quit");
    let end = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < end,
            "dcore local did not stop:\n{}",
            out.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(out.text().contains("page: kill n2"), "{}", out.text());
}
