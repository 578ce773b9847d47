"""Hostile inputs and machine conditions: every case ends with a counted reject (its exact reason in
rejects.parquet) or one message from the command (its exact text, no traceback), never a hang, a crash or a
silent skip. Photo folders with FIFOs, devices, sockets, dangling and looping links, unreadable folders and
zlib bombs; outputs that are links or cannot be written; crafted release tars (a shard member renamed to
climb out of the folder, a card edited and its checksums recomputed); extracting over an existing folder.

Tests run as root here: a folder with mode 000 is readable to root, so that case is also tested by making the
listing itself fail."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import signal
import socket
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from flows.cli import main
from helpers import png_zlib_bomb, synthetic_groups
from spotdiff.common.images import BadInput, load_photo
from spotdiff.common.outputs import atomic_write, clean_stale_tmp, reset_dir
from spotdiff.config import ShardConfig, parse_params
from spotdiff.errors import OutputError, ReleaseError
from spotdiff.generate.run import generate
from spotdiff.generate.sources import photos
from spotdiff.publish.run import publish
from spotdiff.publish.sign import keygen
from spotdiff.publish.verify import safe_extract, verify
from spotdiff.shard.run import write_shards

ROOT_USER = os.geteuid() == 0


@pytest.fixture
def no_hang():
    """Fail instead of hanging forever (a FIFO opened for reading blocks until a writer comes)."""
    def fail(*_):
        raise TimeoutError("hung: something opened a FIFO or a device")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _photo(path: Path, seed: int) -> None:
    """A square subject on a plain background: a photo GrabCut can cut."""
    rng = np.random.default_rng(seed)
    img = np.full((96, 96, 3), 230, np.uint8)
    img[24:72, 24:72] = rng.integers(30, 200, 3)
    Image.fromarray(img).save(path, quality=95)


# ------------------------------------------------------------------------------------------ photo folders


@pytest.fixture
def hostile_folder(tmp_path) -> tuple[Path, dict[str, str | None]]:
    """A photo folder with one entry of every awkward kind. Returns (root, entry -> expected reject reason,
    None where it must be kept)."""
    root = tmp_path / "photos"
    (root / "teapot").mkdir(parents=True)
    (root / "mug").mkdir()
    _photo(root / "teapot/good.jpg", 0)
    _photo(root / "mug/good.jpg", 1)
    os.mkfifo(root / "teapot/x.jpg")
    (root / "teapot/dangling.jpg").symlink_to(root / "nowhere.jpg")
    (root / "teapot/zero.jpg").symlink_to("/dev/zero")
    (root / "teapot/up").symlink_to("..")
    (root / "teapot/loop_a").symlink_to("loop_b")
    (root / "teapot/loop_b").symlink_to("loop_a")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "mug/sock"))
    sock.close()
    (root / "mug/bomb.png").write_bytes(png_zlib_bomb(b"iCCP"))
    (root / "mug/text_bomb.png").write_bytes(png_zlib_bomb(b"zTXt"))
    (root / "ghost").symlink_to(tmp_path / "unmounted-disk/ghost")  # a subject folder on a missing disk
    (root / "README.md").write_text("photos of my things\n")  # beside the subject folders: not an input
    expected = {"teapot/good.jpg": None, "mug/good.jpg": None, "teapot/x.jpg": "fifo",
                "teapot/dangling.jpg": "dangling_symlink", "teapot/zero.jpg": "device", "teapot/up": "symlink_loop",
                "teapot/loop_a": "symlink_loop", "teapot/loop_b": "symlink_loop", "mug/sock": "socket",
                "mug/bomb.png": "decompression_bomb", "mug/text_bomb.png": "decompression_bomb",
                "ghost": "dangling_symlink"}
    return root, expected


def test_every_folder_entry_is_kept_or_a_counted_reject(hostile_folder, tmp_path, no_hang):
    root, expected = hostile_folder
    files = [k for k in expected if k.endswith((".jpg", ".png")) and (root / k).is_file()]
    cfg = parse_params({"generate": {"n_groups": len(files), "image_size": 64, "workers": 1, "sources": {"folder": 1},
                                     "folder": str(root), "min_segment_score": 0.0}}).generate
    stats = generate(cfg, tmp_path / "gen", progress=False)
    # items are named relative to generate.folder (no path of this machine in any output)
    rejects = {r["item"]: r["reason"] for r in pq.read_table(tmp_path / "gen/rejects.parquet").to_pylist()}
    kept = {r["item"] for r in pq.read_table(tmp_path / "gen/records.parquet").to_pylist()}
    assert rejects == {k: v for k, v in expected.items() if v}
    assert kept == {k for k, v in expected.items() if v is None}
    assert stats.groups_in == len(expected) == stats.kept + stats.rejected
    assert stats.by_source["folder"] == {"in": len(expected), "kept": 2, "rejected": len(expected) - 2}
    assert "internal_error" not in stats.rejected_by_reason


@pytest.mark.parametrize("tag", [b"iCCP", b"zTXt"])
def test_zlib_bomb_in_png_metadata_is_a_decompression_bomb(tmp_path, tag):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_zlib_bomb(tag))
    assert len(path.read_bytes()) < 100_000  # 64 MB when inflated
    with pytest.raises(BadInput) as err:
        load_photo(path, max_pixels=40_000_000)
    assert err.value.reason == "decompression_bomb"
    assert "Decompressed data too large" in err.value.detail


def test_fifo_and_device_are_refused_before_they_are_read(tmp_path, no_hang):
    os.mkfifo(tmp_path / "pipe.jpg")
    for path, reason in ((tmp_path / "pipe.jpg", "fifo"), (Path("/dev/zero"), "device"), (tmp_path, "not_a_regular_file")):
        with pytest.raises(BadInput) as err:
            load_photo(path, max_pixels=1000)
        assert err.value.reason == reason


def test_unreadable_subfolder_is_a_reject_even_as_root(tmp_path, monkeypatch):
    """Root reads a mode-000 folder, so the listing is made to fail as it does for anyone else."""
    root = tmp_path / "photos"
    (root / "cat/private").mkdir(parents=True)
    _photo(root / "cat/a.jpg", 0)
    real = os.scandir

    def scandir(path="."):
        if Path(path) == root / "cat/private":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(photos.os, "scandir", scandir)
    items, rejects = photos.inventory_folder(root)
    assert [i[0] for i in items] == ["cat/a.jpg"]
    assert rejects == [("cat/private", "cat", "cat", "unreadable_folder", "PermissionError: Permission denied")]


@pytest.mark.skipif(ROOT_USER, reason="root reads a folder of mode 000; the test above makes the listing fail instead")
def test_unreadable_subfolder_mode_000_is_a_reject(tmp_path):
    root = tmp_path / "photos"
    (root / "cat/private").mkdir(parents=True)
    _photo(root / "cat/a.jpg", 0)
    (root / "cat/private").chmod(0)
    try:
        _, rejects = photos.inventory_folder(root)
    finally:
        (root / "cat/private").chmod(0o755)
    assert [(Path(r[0]).name, r[3]) for r in rejects] == [("private", "unreadable_folder")]


# ------------------------------------------------------------------------------------------------ outputs


def _tiny(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"generate": {"n_groups": 2, "image_size": 64, "workers": 1,
                                                 "sources": {"procedural": 1}}}))
    return path


def test_symlinked_output_folders_are_written_through(tmp_path, capsys):
    """data/generated and data/shards as links to another disk: emptied and written through, kept as links."""
    for name in ("gen", "shards"):
        (tmp_path / f"disk/{name}").mkdir(parents=True)
        (tmp_path / f"disk/{name}/stale.txt").write_text("old run")
        (tmp_path / name).symlink_to(tmp_path / f"disk/{name}")
    assert main(["generate", "-q", "-p", str(_tiny(tmp_path)), "--out", str(tmp_path / "gen")]) == 0
    write_shards(synthetic_groups(4), tmp_path / "shards", ShardConfig(), contact_sheet=False)
    for name, made in (("gen", "stats.json"), ("shards", "SHA256SUMS")):
        assert (tmp_path / name).is_symlink()
        assert (tmp_path / f"disk/{name}/{made}").is_file()
        assert not (tmp_path / f"disk/{name}/stale.txt").exists()


def test_reset_dir_keeps_links_and_refuses_what_is_not_a_folder(tmp_path):
    (tmp_path / "real/sub").mkdir(parents=True)
    (tmp_path / "real/sub/x").write_text("x")
    (tmp_path / "real/keep-target").write_text("outside")
    (tmp_path / "real/link-out").symlink_to(tmp_path / "real/keep-target")  # a link inside: removed, not followed
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert reset_dir(tmp_path / "link") == tmp_path / "link"
    assert (tmp_path / "link").is_symlink() and list((tmp_path / "real").iterdir()) == []
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(OutputError, match="must be a folder, but it is a file"):
        reset_dir(tmp_path / "file")
    with pytest.raises(OutputError, match=r"is a symbolic link to '.*gone', which does not exist"):
        reset_dir(tmp_path / "dangling")


def test_unwritable_or_impossible_out_is_one_line(tmp_path, capsys):
    params = str(_tiny(tmp_path))
    (tmp_path / "file").write_text("a regular file where a folder would go")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    cases = {str(tmp_path / "file/out"): f"not a folder (a path component is a file): {tmp_path / 'file/out'}",
             str(tmp_path / "file"): f"{tmp_path / 'file'} must be a folder, but it is a file: remove it or choose "
                                     "another path",
             str(tmp_path / "dangling"): f"{tmp_path / 'dangling'} is a symbolic link to '{tmp_path / 'gone'}', which "
                                         "does not exist: create that folder (or remove the link) and run again"}
    for out, message in cases.items():
        assert main(["generate", "-q", "-p", params, "--out", out]) == 1
        assert capsys.readouterr().err == f"spotdiff generate: {message}\n"


@pytest.mark.skipif(ROOT_USER, reason="root may write into a read-only folder")
def test_permission_denied_out_is_one_line(tmp_path, capsys):
    (tmp_path / "ro").mkdir(mode=0o555)
    assert main(["generate", "-q", "-p", str(_tiny(tmp_path)), "--out", str(tmp_path / "ro/out")]) == 1
    assert capsys.readouterr().err == f"spotdiff generate: permission denied: {tmp_path / 'ro/out'}\n"


def test_expected_os_conditions_are_one_line_and_bugs_a_traceback(monkeypatch, capsys):
    from flows import cli

    def full_disk(args):
        raise OSError(errno.ENOSPC, "No space left on device", "data/shards/.train-000001.tar.4242.tmp")

    monkeypatch.setitem(cli.COMMANDS, "verify-shards", full_disk)
    assert main(["verify-shards", "x"]) == 1
    assert capsys.readouterr().err == ("spotdiff verify-shards: no space left on device: "
                                       "data/shards/.train-000001.tar.4242.tmp; free some space and run again\n")

    def bug(args):
        return np.zeros(3)[5]  # IndexError inside numpy: a bug, not the user's mistake

    monkeypatch.setitem(cli.COMMANDS, "verify-shards", bug)
    with pytest.raises(IndexError):
        main(["verify-shards", "x"])

    def value_bug(args):
        raise ValueError("operands could not be broadcast together")  # a ValueError is no longer a user error

    monkeypatch.setitem(cli.COMMANDS, "verify-shards", value_bug)
    with pytest.raises(ValueError):
        main(["verify-shards", "x"])


def test_a_full_disk_names_where_the_command_was_writing(tmp_path, monkeypatch, capsys):
    """A write that fails for want of space names no file (only open() does): the message still has a path."""
    with pytest.raises(OSError) as err, atomic_write(tmp_path / "x.tar") as tmp:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.filename == str(tmp_path / "x.tar") and list(tmp_path.iterdir()) == []
    import spotdiff.generate.run as gen

    def full(params, paths, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")  # e.g. pyarrow writing records.parquet

    monkeypatch.setattr(gen, "run", full)
    assert main(["generate", "-q", "-p", str(_tiny(tmp_path)), "--out", str(tmp_path / "gen")]) == 1
    assert capsys.readouterr().err == (f"spotdiff generate: no space left on device: {tmp_path / 'gen'}; free some "
                                       "space and run again\n")


def test_stale_temp_files_of_a_killed_run_are_cleaned(tmp_path):
    dead = 2 ** 22 + 12345  # above pid_max's default: never a live process
    stale = tmp_path / f".spotdiff10k-1.0.0.tar.{dead}.tmp"
    stale.write_text("half a tar")
    live = tmp_path / f".other.tar.{os.getppid()}.tmp"  # a concurrent writer's: left alone
    live.write_text("being written")
    assert clean_stale_tmp(tmp_path) == [stale]
    assert live.exists() and not stale.exists()
    with pytest.raises(KeyboardInterrupt), atomic_write(tmp_path / "x.tar") as tmp:
        tmp.write_text("partial")
        raise KeyboardInterrupt  # Ctrl-C mid-write: no temp file, no final file
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


# ----------------------------------------------------------------------------------------------- releases


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    mine, other = keygen(folder / "release.key"), keygen(folder / "other.key")
    return mine, other


@pytest.fixture(scope="module")
def released(tmp_path_factory, keys):
    """(unsigned release, signed release) of the same small shards; the signed one by ``keys[0]``."""
    root = tmp_path_factory.mktemp("released")
    write_shards(synthetic_groups(12), root / "shards", ShardConfig(max_samples=8), contact_sheet=False)
    (root / "params.yaml").write_text(yaml.safe_dump({"generate": {"seed": 1, "sources": {"procedural": 1}}}))
    common = dict(version="1.0.0", params_path=root / "params.yaml", backends={"sources": "procedural"})
    unsigned = publish(root / "shards", root / "unsigned", **common)
    signed = publish(root / "shards", root / "signed", **common, sign_key=keys[0][0])
    return unsigned, signed


TOP = "spotdiff10k-1.0.0"


def _members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _retar(src: Path, dst: Path, replace: dict[str, bytes]) -> Path:
    """``src`` copied member by member with ``replace`` {member name: bytes}."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as tout:
        for m in tin.getmembers():
            data = replace.get(m.name, tin.extractfile(m).read() if m.isfile() else None)
            if data is not None:
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
    return dst


def _resum(members: dict[str, bytes], changed: dict[str, bytes]) -> dict[str, bytes]:
    """``changed`` plus the release's SHA256SUMS recomputed over it, as an attacker would."""
    sums = members[f"{TOP}/SHA256SUMS"].decode()
    for name, data in changed.items():
        old = hashlib.sha256(members[name]).hexdigest()
        sums = sums.replace(old, hashlib.sha256(data).hexdigest())
    return {**changed, f"{TOP}/SHA256SUMS": sums.encode()}


def _rename_first_member(shard: bytes, new: str) -> tuple[bytes, str]:
    """A shard tar with its first member renamed in its header (same size, checksum fixed), and the old name."""
    head = bytearray(shard[:512])
    old = head[:100].rstrip(b"\0").decode()
    head[:100] = new.encode().ljust(100, b"\0")
    head[148:156] = b" " * 8
    head[148:156] = f"{sum(head):06o}\0 ".encode()
    return bytes(head) + shard[512:], old


def test_signed_release_is_byte_reproducible_and_unsigned_is_unchanged(released, keys, tmp_path):
    unsigned, signed = released
    names = set(_members(unsigned))
    assert set(_members(signed)) == names | {f"{TOP}/SHA256SUMS.sig"}
    root = unsigned.parent.parent
    common = dict(version="1.0.0", params_path=root / "params.yaml", backends={"sources": "procedural"})
    assert publish(root / "shards", tmp_path / "u", **common).read_bytes() == unsigned.read_bytes()
    assert publish(root / "shards", tmp_path / "s", **common, sign_key=keys[0][0]).read_bytes() == signed.read_bytes()
    assert verify(signed, key=keys[0][1]).signature == f"key {keys[0][2]}"
    assert verify(signed).signature == "not checked" and verify(unsigned).signature == "unsigned"


@pytest.mark.parametrize("new_name", ["../../../../{key}.anchor.jpg", "sub/{key}.anchor.jpg", "/tmp/{key}.anchor.jpg"])
def test_shard_member_with_a_path_fails_verify(released, tmp_path, new_name):
    """Only the basename used to be checked: a member that extracts outside the folder passed."""
    unsigned, _ = released
    members = _members(unsigned)
    shard_name = f"{TOP}/shards/train-000000.tar"
    old = members[shard_name][:100].rstrip(b"\0").decode()  # the first member's name: KEY.SUFFIX
    renamed = new_name.format(key=old.split(".")[0])
    shard, _ = _rename_first_member(members[shard_name], renamed)
    with tarfile.open(fileobj=io.BytesIO(shard)) as t:
        assert t.getnames()[0] == renamed
    inner_sums = members[f"{TOP}/shards/SHA256SUMS"].decode().replace(
        hashlib.sha256(members[shard_name]).hexdigest(), hashlib.sha256(shard).hexdigest()).encode()
    bad = _retar(unsigned, tmp_path / "bad.tar",
                 _resum(members, {shard_name: shard, f"{TOP}/shards/SHA256SUMS": inner_sums}))
    with pytest.raises(ReleaseError) as err:
        verify(bad)
    assert (f"shards/train-000000.tar: member {renamed!r}: a path, not a flat KEY.SUFFIX name "
            "(no separators allowed)") in err.value.problems


def test_verify_shards_refuses_a_member_with_a_path(tmp_path, capsys):
    shards = tmp_path / "shards"
    write_shards(synthetic_groups(4), shards, ShardConfig(), contact_sheet=False)
    tar = next(shards.glob("train-*.tar"))
    old = tar.read_bytes()[:100].rstrip(b"\0").decode()
    tar.write_bytes(_rename_first_member(tar.read_bytes(), f"../{old}")[0])
    sums = shards / "SHA256SUMS"
    sums.write_text("".join(f"{hashlib.sha256((shards / n).read_bytes()).hexdigest()}  {n}\n"
                            for n in sorted(p.name for p in shards.glob("*.tar"))))
    assert main(["verify-shards", str(shards)]) == 1
    assert capsys.readouterr().err == (f"spotdiff verify-shards: {tar.name}: member '../{old}': a path, not a flat "
                                       "KEY.SUFFIX name (no separators allowed)\n")


def test_edited_card_with_recomputed_checksums_fails_only_with_a_key(released, keys, tmp_path, capsys):
    """A licence changed in the card and SHA256SUMS recomputed: checksums cannot tell, the signature can."""
    unsigned, signed = released
    for release in (unsigned, signed):
        members = _members(release)
        card = members[f"{TOP}/README.md"].decode()
        assert "\nlicense: " in card
        edited = card.replace("\nlicense: ", "\nlicense: mit\nlicense_was: ", 1).encode()
        bad = _retar(release, tmp_path / f"edited-{release.parent.name}.tar", _resum(members, {f"{TOP}/README.md": edited}))
        verify(bad)  # consistent checksums: without a key this passes, which is why releases are signed
        with pytest.raises(ReleaseError) as err:
            verify(bad, key=keys[0][1])
        if release is unsigned:
            assert err.value.problems == ["SHA256SUMS.sig: missing: the release is not signed, and a key was given to "
                                          "check it"]
        else:
            assert err.value.problems == [f"SHA256SUMS.sig: the signature does not match SHA256SUMS under key "
                                          f"{keys[0][2]}: the release was changed after it was signed, or signed "
                                          "with another key"]
            assert main(["verify", str(bad), "--key", str(keys[0][1])]) == 1
            assert capsys.readouterr().err == f"spotdiff verify: {bad}: 1 problem(s):\n  - {err.value.problems[0]}\n"
    with pytest.raises(ReleaseError) as err:  # the intact release, checked against another key
        verify(signed, key=keys[1][1])
    assert f"(it names key {keys[0][2]}, yours is {keys[1][2]})" in err.value.problems[0]


def test_signing_with_something_that_is_not_an_ed25519_key_is_a_config_error(released, tmp_path, capsys):
    (tmp_path / "notakey.pem").write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    assert main(["verify", str(released[1]), "--key", str(tmp_path / "notakey.pem")]) == 2
    assert capsys.readouterr().err == (f"spotdiff verify: config error\n--key {tmp_path / 'notakey.pem'}: not a PEM "
                                       "or OpenSSH public key\n")
    assert main(["keygen", str(tmp_path / "k")]) == 0 and main(["keygen", str(tmp_path / "k")]) == 1
    assert capsys.readouterr().err == f"spotdiff keygen: {tmp_path / 'k'} already exists: keygen never replaces a key\n"
    assert oct((tmp_path / "k").stat().st_mode & 0o777) == "0o600"


def test_extract_into_an_existing_folder_is_one_line(released, tmp_path, capsys):
    _, signed = released
    assert main(["verify", str(signed), "--extract", str(tmp_path / "x")]) == 0
    capsys.readouterr()
    assert main(["verify", str(signed), "--extract", str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err == (f"spotdiff verify: {(tmp_path / 'x' / TOP).resolve()} already exists: remove it "
                                       "or extract into another folder\n")
    assert [p.name for p in (tmp_path / "x").iterdir()] == [TOP]
    with pytest.raises(FileExistsError):  # still a FileExistsError for library callers
        safe_extract(signed, tmp_path / "x")
