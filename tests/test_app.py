"""The web page (app.py): its helpers, and the page itself in a real browser (Debian's chromium driven
by Playwright through executable_path; no browser is downloaded). The browser cases skip, saying why,
only where no chromium or Playwright can be had; .ci/run installs chromium."""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from app import check_limits, find_faces, timeline_strip
from face_detection import CascadeDetector
from tests.conftest import ROOT
from tests.test_dubbing import astronaut_head, tone, write_clip
from utils.audio import AUDIO_RATE_HZ, load_audio
from utils.errors import TalkLipError
from utils.video import VideoReader

BIG, SMALL = (10, 20, 200, 230), (40, 300, 150, 172)     # (top, left, width, height) of the two heads
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def two_faces_frame() -> np.ndarray:
    frame = np.full((260, 480, 3), 90, np.uint8)
    for top, left, width, height in (BIG, SMALL):
        frame[top:top + height, left:left + width] = astronaut_head(width, height)
    return frame


def mouth_of(frame, head):
    """The mouth of the face in the ``head`` rectangle: the lower middle of the box the cascade finds there."""
    top, left, width, height = head
    x1, y1, x2, y2 = CascadeDetector().detect_faces(two_faces_frame()[None, top:top + height, left:left + width])[0][0][:4]
    x1, y1, x2, y2 = int(x1) + left, int(y1) + top, int(x2) + left, int(y2) + top
    return frame[y1 + (y2 - y1) * 6 // 10:y2, x1 + (x2 - x1) // 4:x2 - (x2 - x1) // 4]


def test_faces_are_numbered_largest_first_and_a_click_picks_the_one_under_it():
    faces = find_faces(two_faces_frame(), CascadeDetector())
    assert len(faces.boxes) == 2
    (x1, _, x2, _), (u1, _, u2, _) = faces.boxes
    assert x2 - x1 > u2 - u1 and x1 < BIG[1] + BIG[2] < u1          # 1: the big head on the left
    assert faces.at(*faces.centre(2)) == 2 and faces.at(*faces.centre(1)) == 1
    assert faces.at(479, 259) == 2                                   # outside both: the nearest centre


def test_timeline_strip_marks_dubbed_and_untouched_frames():
    strip = timeline_strip([True] * 30 + [False] * 10, width=40)
    assert (strip[:, :30, 1] == 170).all() and (strip[:, 30:, 1] == 150).all()


def test_limits_are_one_line_refusals(tmp_path):
    write_clip(str(tmp_path / "v.mp4"), [two_faces_frame()] * 10)
    tone(str(tmp_path / "a.wav"), 3.0)
    check_limits(str(tmp_path / "v.mp4"), str(tmp_path / "a.wav"), max_upload_mb=10, max_seconds=5)
    with pytest.raises(TalkLipError, match="speech lasts over this page's 2 s limit"):
        check_limits(str(tmp_path / "v.mp4"), str(tmp_path / "a.wav"), max_upload_mb=10, max_seconds=2)
    with pytest.raises(TalkLipError, match="MB limit"):
        check_limits(str(tmp_path / "v.mp4"), str(tmp_path / "a.wav"), max_upload_mb=0.001, max_seconds=5)


def test_the_speech_limit_is_checked_without_decoding_the_whole_upload(tmp_path):
    """A 15-minute m4a against a 300 s limit: decoded as a stream that stops at the limit, so the check's
    memory does not grow with the upload (loading it whole took 0.64 -> 4.5 GB for 9 hours). Measured in a
    fresh process: its peak RSS grows by less than the 15 minutes would take as 16 kHz float samples."""
    import subprocess
    import sys
    from tests.conftest import ROOT
    from utils.ffmpeg import run_ffmpeg
    long = tmp_path / "long.m4a"
    run_ffmpeg(["-f", "lavfi", "-i", "sine=frequency=300:sample_rate=8000:duration=900", "-c:a", "aac", "-b:a", "12k",
                str(long)], source="test")
    script = ("import resource, sys; from app import check_limits; from utils.errors import TalkLipError\n"
              "def peak(): return int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) // 1024\n"
              "before = peak()\n"
              "try:\n    check_limits(sys.argv[1], sys.argv[2], 200, 300)\nexcept TalkLipError as e:\n    print(e)\n"
              "print(peak() - before)\n")
    write_clip(str(tmp_path / "v.mp4"), [two_faces_frame()] * 2)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "v.mp4"), str(long)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    message, grown_mb = proc.stdout.strip().splitlines()
    assert "speech lasts over this page's 300 s limit" in message, proc.stderr
    assert int(grown_mb) < 900 * 16000 * 4 / 2 ** 20 / 2, grown_mb        # under half of 55 MB


def test_without_a_checkpoint_the_quickstart_s_last_one_is_used_or_one_line_says_what_to_pass(tmp_path):
    from app import default_checkpoint
    with pytest.raises(TalkLipError, match="pass --ckpt_path"):
        default_checkpoint(str(tmp_path))
    folder = tmp_path / "runs" / "quickstart" / "train"
    folder.mkdir(parents=True)
    for step in (40, 300, 80):
        (folder / f"checkpoint_step{step:09d}.pth").write_bytes(b"")
    assert default_checkpoint(str(tmp_path)) == str(folder / "checkpoint_step000000300.pth")


def test_an_odd_sized_dub_is_cropped_by_a_pixel_for_browsers_and_says_so(tmp_path):
    from app import browser_playable
    from utils.video import probe_video
    write_clip(str(tmp_path / "odd.mp4"), [np.full((97, 161, 3), 100, np.uint8)] * 5)
    shown, note = browser_playable(str(tmp_path / "odd.mp4"), str(tmp_path))
    info = probe_video(shown)
    assert (info.width, info.height, info.num_frames) == (160, 96, 5) and "161x97" in note and "160x96" in note
    write_clip(str(tmp_path / "even.mp4"), [np.full((96, 160, 3), 100, np.uint8)] * 5)
    assert browser_playable(str(tmp_path / "even.mp4"), str(tmp_path)) == (str(tmp_path / "even.mp4"), None)


# ------------------------------------------------------------------------------- in a browser
def chromium_path():
    for path in ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -r requirement-test.txt)")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium (apt-get install chromium): the page is not tested in a browser here")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


APP = {}


def wait_for_page(proc, port: int, log_path) -> str:
    """The URL of app.py's page once it answers; fails (killing it) if it exits or stays silent for 60 s."""
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=1)
            return url
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited: {log_path.read_text()}")
            time.sleep(0.25)
    proc.kill()
    pytest.fail(f"app.py did not answer on {url}: {log_path.read_text()}")


@pytest.fixture(scope="module")
def page_url(talklip_checkpoint, tmp_path_factory):
    """app.py serving a small random generator on a free port, for this module's cases."""
    port, workdir = free_port(), tmp_path_factory.mktemp("app")
    APP["system_tmp"] = workdir / "system_tmp"          # the page's TMPDIR: nothing of an upload may stay there
    APP["system_tmp"].mkdir()
    env = {**os.environ, "PYTHONPATH": ROOT, "TMPDIR": str(APP["system_tmp"])}
    log = open(workdir / "app.log", "w")
    ckpt = os.environ.get("TALKLIP_APP_CKPT", talklip_checkpoint[0])     # a trained one for the README's picture
    proc = subprocess.Popen([sys.executable, "app.py", "--ckpt_path", ckpt, "--port", str(port),
                             "--device", "cpu", "--workdir", str(workdir / "jobs"), "--max_seconds", "20"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = wait_for_page(proc, port, workdir / "app.log")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture
def page(browser, page_url, tmp_path, request):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    tab = context.new_page()
    tab.goto(page_url)
    yield tab
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        tab.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"screenshot of the failed page: {tmp_path / 'failure.png'}")
    context.close()


def upload(page, elem_id: str, path: str):
    page.locator(f"#{elem_id} input[type=file]").set_input_files(path)


def click_image_at(page, selector: str, x: float, y: float):
    """Click the pixel (x, y) of the picture shown by an <img> (scaled to fit its box, centred)."""
    img = page.locator(selector)
    img.wait_for(state="visible")
    geo = img.evaluate("e => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height, "
                       "e.naturalWidth, e.naturalHeight]; }")
    left, top, width, height, natural_w, natural_h = geo
    scale = min(width / natural_w, height / natural_h)
    page.mouse.click(left + (width - natural_w * scale) / 2 + x * scale, top + (height - natural_h * scale) / 2 + y * scale)


def test_the_page_dubs_the_clicked_face(page, page_url, talklip_checkpoint, tmp_path):
    """Upload a 2 s clip with two faces and speech, click the smaller face, dub, download: the file has
    the speech's frames and length, the clicked face's mouth changed, the other face did not."""
    frames = [two_faces_frame()] * 50
    write_clip(str(tmp_path / "two.mp4"), frames)
    tone(str(tmp_path / "speech.wav"), 2.0)
    upload(page, "face_input", str(tmp_path / "two.mp4"))
    page.get_by_text("2 face(s) found on the first frame").wait_for(timeout=60_000)
    faces = find_faces(frames[0], CascadeDetector())
    click_image_at(page, "#preview img", *faces.centre(2))
    page.wait_for_function("() => document.querySelector('#face_pick input').value === '2'", timeout=30_000)
    upload(page, "speech_input", str(tmp_path / "speech.wav"))
    page.locator("#reference input").click()                          # the reference: the first frame's face
    page.get_by_role("option", name="first").click()
    page.wait_for_function("() => document.querySelector('#reference input').value === 'first'", timeout=30_000)
    page.locator("#run").click()
    page.locator("#dubbed video").wait_for(state="attached", timeout=180_000)
    page.get_by_text("passed through untouched", exact=False).wait_for(timeout=60_000)
    if os.environ.get("TALKLIP_SCREENSHOT"):                       # the README's picture (docs/app.png)
        page.screenshot(path=os.environ["TALKLIP_SCREENSHOT"], full_page=True)
    report = page.locator("#report").inner_text()
    assert "50 frames" in report and "dubbed: 50 frames" in report and "no face found on 0 of them" in report, report
    assert "reference face: frame 0" in report, report
    with page.expect_download() as download:
        page.locator("#download a").first.click()
    out = str(tmp_path / "downloaded.mp4")
    download.value.save_as(out)
    dubbed = list(VideoReader(out))
    assert len(dubbed) == 50 and abs(len(load_audio(out)) / AUDIO_RATE_HZ - 2.0) < 0.1
    write_clip(str(tmp_path / "again.mp4"), frames)               # the input through the same encoder
    again = list(VideoReader(str(tmp_path / "again.mp4")))
    diff = lambda head: np.mean([np.abs(mouth_of(a, head).astype(int) - mouth_of(b, head)).mean()
                                 for a, b in zip(dubbed, again)])
    assert diff(SMALL) > 10 > 3 > diff(BIG), (diff(SMALL), diff(BIG))
    # one code path: inf_demo.py on the same files, following the same face, writes the same frames
    from tests.conftest import run_module
    x, y = faces.centre(2)
    proc = run_module("inf_demo", "--video_path", tmp_path / "two.mp4", "--wav_path", tmp_path / "speech.wav",
                      "--ckpt_path", os.environ.get("TALKLIP_APP_CKPT", talklip_checkpoint[0]), "--follow", f"{x},{y}",
                      "--reference", "first", "--save_path", tmp_path / "cli", "--device", "cpu", "--no_progress")
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.stack(list(VideoReader(str(tmp_path / "cli.mp4")))), np.stack(dubbed))


def test_a_video_without_a_face_gives_its_one_line_error_and_the_page_stays_usable(page, tmp_path):
    write_clip(str(tmp_path / "wall.mp4"), [np.full((120, 160, 3), 128, np.uint8)] * 10)
    tone(str(tmp_path / "speech.wav"), 0.4)
    upload(page, "face_input", str(tmp_path / "wall.mp4"))
    page.get_by_text("no face found on the first frame").wait_for(timeout=60_000)
    upload(page, "speech_input", str(tmp_path / "speech.wav"))
    page.locator("#run").click()
    error = page.locator("#report").get_by_text("error: no face found in any frame of")
    error.wait_for(timeout=60_000)
    assert "Traceback" not in page.content()
    assert "wall.mp4" in error.inner_text() and len(error.inner_text().strip().splitlines()) == 1
    page.locator("#run").click()                                   # still answers
    error.wait_for(timeout=60_000)


def test_the_page_serves_no_file_outside_its_folder(page_url):
    for path in ("/etc/passwd", os.path.join(ROOT, "app.py")):
        for prefix in ("gradio_api/file=", "file="):
            try:
                with urllib.request.urlopen(page_url + prefix + path, timeout=10) as answer:
                    assert answer.status != 200 or b"root:" not in answer.read()
            except urllib.error.HTTPError as refused:
                assert refused.code in (403, 404), refused.code


def post_upload(url: str, name: str, size: int):
    """POST one file to the page's upload route; -> (HTTP status, body)."""
    boundary = "talkliptestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + b"x" * size + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode("utf-8", "replace")


def test_refused_uploads_leave_nothing_in_the_system_temporary_folder(page_url):
    """An upload named '..' is refused in a short answer; one named '' is refused or kept under a name of the
    page's own; none leaves its bytes in the system temporary folder (they spool inside the page's own
    folder, removed when it stops)."""
    answers = {name: post_upload(page_url, name, 2 << 20) for name in ("..", "", "fine.wav")}
    status, body = answers[".."]
    assert 400 <= status < 500 and "Traceback" not in body and len(body) < 300, (status, body[:300])
    status, body = answers[""]
    assert "Traceback" not in body and (400 <= status < 500 or (status == 200 and "/jobs/uploads/" in body)), body
    assert answers["fine.wav"][0] == 200, answers["fine.wav"]
    left = [os.path.join(d, f) for d, _, files in os.walk(APP["system_tmp"]) for f in files
            if os.path.getsize(os.path.join(d, f)) >= 1 << 20]
    assert not left, left


def test_errors_speak_of_the_upload_not_the_server_s_paths_or_file_lists(tmp_path):
    """A non-video upload: the message names the upload (not the server's temporary path) and gives
    advice for the page (not preprocessing's 'remove it from the file list')."""
    from app import first_frame, for_visitor
    upload = tmp_path / "gradio" / "abc123" / "notes.mp4"
    upload.parent.mkdir(parents=True)
    upload.write_text("this is not a video")
    with pytest.raises(TalkLipError) as error:
        first_frame(str(upload))
    shown = for_visitor(str(error.value), {str(upload): "the face video"})
    assert "the face video (notes.mp4)" in shown and str(tmp_path) not in shown
    assert "file list" not in shown and "upload another file" in shown


def start_page(talklip_checkpoint, tmp_path):
    """app.py on a free port with its own temporary folder and log: (process, port, temporary folder, log)."""
    port, system_tmp = free_port(), tmp_path / "tmp"
    system_tmp.mkdir()
    log_path = tmp_path / "app.log"
    env = {**os.environ, "PYTHONPATH": ROOT, "TMPDIR": str(system_tmp)}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--ckpt_path", talklip_checkpoint[0], "--port", str(port),
                                 "--device", "cpu"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, port, system_tmp, log_path


def test_sigterm_during_a_dub_stops_it_and_exits_143(browser, talklip_checkpoint, tmp_path):
    """SIGTERM while the page dubs: the dub stops at its next progress report, the page's folder is removed,
    and the process exits 143 (it aborted with signal 6: 'terminate called without an active exception')."""
    proc, port, system_tmp, log_path = start_page(talklip_checkpoint, tmp_path)
    try:
        url = wait_for_page(proc, port, log_path)
        write_clip(str(tmp_path / "two.mp4"), [two_faces_frame()] * 25)
        tone(str(tmp_path / "speech.wav"), 20.0)                  # a dub long enough to stop halfway
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        tab = context.new_page()
        tab.goto(url)
        upload(tab, "face_input", str(tmp_path / "two.mp4"))
        tab.get_by_text("face(s) found on the first frame").wait_for(timeout=60_000)
        upload(tab, "speech_input", str(tmp_path / "speech.wav"))
        tab.locator("#speech_input audio").first.wait_for(state="attached", timeout=60_000)
        tab.locator("#run").click()
        for _ in range(600):                       # until the dub writes its output (a temporary: a dot-file)
            if glob.glob(str(system_tmp / "talklip-app-*" / "job-*" / ".dubbed*")):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the dub did not start: {tab.locator('#report').inner_text()} {log_path.read_text()[-2000:]}")
        proc.send_signal(signal.SIGTERM)
        began = time.time()
        code = proc.wait(timeout=30)
        context.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log_path.read_text()
    assert code == 143 and time.time() - began < 20, (code, text[-2000:])
    assert "terminated" in text and "terminate called" not in text
    assert not glob.glob(str(system_tmp / "talklip-app-*")), os.listdir(system_tmp)


def test_a_closed_terminal_stops_the_page_and_removes_its_folder(talklip_checkpoint, tmp_path):
    """SIGHUP (the terminal or ssh session that started app.py closed) cleans up as SIGTERM does: the page's
    folder of visitors' uploads and dubs is removed and the process exits 129."""
    proc, port, system_tmp, log_path = start_page(talklip_checkpoint, tmp_path)
    try:
        wait_for_page(proc, port, log_path)
        assert glob.glob(str(system_tmp / "talklip-app-*"))
        proc.send_signal(signal.SIGHUP)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 129, (code, log_path.read_text()[-2000:])
    assert not glob.glob(str(system_tmp / "talklip-app-*")), os.listdir(system_tmp)
