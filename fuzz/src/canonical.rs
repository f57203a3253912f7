// A canonical form of a Yjs v1 update (a document's full state), exact about
// every item's id, origins, parent, content and deletion, and insensitive
// only to how the items are cut into blocks.
//
// Two documents with the same items may store them in different blocks: an
// item whose right origin lies inside its origin's block ("crossed
// origins", `fuzz/regressions/update_apply-snapshot-reload-differs*`)
// splits that block; a live document merges the pieces again at commit, a
// document loading everything in one transaction does not. Split into
// one-unit pieces, both hold the same tuples: for each (client, clock) the
// origin, right origin, parent, parent key, content unit, and whether it is
// deleted. This form holds exactly those tuples, run-length encoded (a run
// continues while the next unit's origin is the previous unit and its right
// origin the same, which is the shape every unit of one block has), so a
// GC block of 2^31 units costs one entry. Deletions are kept as merged
// ranges, and a deleted unit's content counts as deleted content whether
// garbage collection has dropped it yet or not (when it does is a detail
// of each store's history). `Any` maps and JSON objects are written with sorted keys (yrs
// writes them in `HashMap` order).
//
// Shared by the fuzz targets (`tandem_fuzz::canonical`) and
// `tandem::crdt::sync`'s tests (included by path); it needs only std and
// serde_json.

use std::collections::BTreeMap;

/// An id: (client, clock).
pub type Id = (u64, u64);

/// Where an item without origins lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parent {
    Root(String),
    Item(Id),
}

/// The content of a run of units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// GC: `len` collected units (no origins, no parent).
    Gc,
    /// Skip: a gap of `len` units (never in a document's own state).
    Skip,
    /// Deleted content kept as a length.
    Deleted,
    /// Countable or not, one entry per unit: its kind (the content ref)
    /// and its canonical bytes. A string unit is one UTF-16 code unit.
    Units(u8, Vec<Vec<u8>>),
}

/// A run of units of one client with consecutive clocks: the first unit has
/// `origin`, every later one the unit before it; all have `right_origin`;
/// `parent`/`parent_sub` are what the first unit's encoding says (written
/// only when it has no origins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub clock: u64,
    pub len: u64,
    pub origin: Option<Id>,
    pub right_origin: Option<Id>,
    pub parent: Option<Parent>,
    pub parent_sub: Option<String>,
    pub content: Content,
}

/// A document's state, canonical (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Canonical {
    pub runs: BTreeMap<u64, Vec<Run>>,
    /// Deleted ranges `[start, end)` per client, merged.
    pub deleted: BTreeMap<u64, Vec<(u64, u64)>>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

type R<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn u8(&mut self) -> R<u8> {
        let b = *self.bytes.get(self.pos).ok_or("truncated")?;
        self.pos += 1;
        Ok(b)
    }
    fn var(&mut self) -> R<u64> {
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift < 64 {
                value |= u64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
    }
    fn buf(&mut self) -> R<&'a [u8]> {
        let len = usize::try_from(self.var()?).map_err(|_| "length")?;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.bytes.len()).ok_or("truncated")?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn string(&mut self) -> R<String> {
        String::from_utf8(self.buf()?.to_vec()).map_err(|_| "utf-8".to_string())
    }
    fn id(&mut self) -> R<Id> {
        Ok((self.var()?, self.var()?))
    }
    fn skip(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or("truncated")?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// A lib0 `Any` value, re-written with object keys sorted.
    fn any(&mut self, out: &mut Vec<u8>, depth: u32) -> R<()> {
        if depth > 1000 {
            return Err("nesting".into());
        }
        let tag = self.u8()?;
        out.push(tag);
        match tag {
            127 | 126 | 121 | 120 => {}
            125 => loop {
                let b = self.u8()?;
                out.push(b);
                if b & 0x80 == 0 {
                    break;
                }
            },
            124 => out.extend_from_slice(self.skip(4)?),
            123 | 122 => out.extend_from_slice(self.skip(8)?),
            119 | 116 => {
                let b = self.buf()?;
                out.extend_from_slice(&(b.len() as u64).to_le_bytes());
                out.extend_from_slice(b);
            }
            118 => {
                let len = self.var()?;
                let mut entries = BTreeMap::new();
                for _ in 0..len {
                    let key = self.string()?;
                    let mut value = Vec::new();
                    self.any(&mut value, depth + 1)?;
                    entries.insert(key, value);
                }
                out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
                for (key, value) in entries {
                    out.extend_from_slice(&(key.len() as u64).to_le_bytes());
                    out.extend_from_slice(key.as_bytes());
                    out.extend_from_slice(&value);
                }
            }
            117 => {
                let len = self.var()?;
                out.extend_from_slice(&len.to_le_bytes());
                for _ in 0..len {
                    self.any(out, depth + 1)?;
                }
            }
            other => return Err(format!("any tag {other}")),
        }
        Ok(())
    }
}

/// A JSON string with object keys sorted (kept as is if it is not JSON).
fn json(text: &str) -> Vec<u8> {
    fn write(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::Object(map) => {
                let entries: BTreeMap<&String, &serde_json::Value> = map.iter().collect();
                out.push('{');
                for (i, (key, value)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(key.clone()).to_string());
                    out.push(':');
                    write(value, out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => {
            let mut out = String::from("J");
            write(&value, &mut out);
            out.into_bytes()
        }
        Err(_) => [b"R".as_slice(), text.as_bytes()].concat(),
    }
}

impl Canonical {
    fn push(&mut self, client: u64, run: Run) {
        let runs = self.runs.entry(client).or_default();
        if let Some(last) = runs.last_mut() {
            let end = last.clock + last.len;
            let continues = run.clock == end
                && match (&last.content, &run.content) {
                    (Content::Gc, Content::Gc) | (Content::Skip, Content::Skip) => true,
                    (Content::Deleted, Content::Deleted) => {
                        run.origin == Some((client, end - 1)) && run.right_origin == last.right_origin
                    }
                    (Content::Units(a, _), Content::Units(b, _)) => {
                        a == b && run.origin == Some((client, end - 1)) && run.right_origin == last.right_origin
                    }
                    _ => false,
                };
            if continues {
                last.len += run.len;
                if let (Content::Units(_, units), Content::Units(_, more)) = (&mut last.content, run.content) {
                    units.extend(more);
                }
                return;
            }
        }
        runs.push(run);
    }
}

/// `run` cut where `deleted` (sorted, merged ranges) starts or ends, its
/// deleted pieces holding [`Content::Deleted`]. Each piece after the first
/// has the unit before it as origin, as yjs gives a split item.
fn split_deleted(client: u64, run: Run, deleted: &[(u64, u64)]) -> Vec<Run> {
    if matches!(run.content, Content::Gc | Content::Skip | Content::Deleted) {
        return vec![run];
    }
    let (start, end) = (run.clock, run.clock + run.len);
    let mut cuts = vec![start, end];
    for &(a, b) in deleted {
        for at in [a, b] {
            if at > start && at < end {
                cuts.push(at);
            }
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let units = match &run.content {
        Content::Units(_, units) => units.clone(),
        _ => Vec::new(),
    };
    let kind = match run.content {
        Content::Units(kind, _) => kind,
        _ => 0,
    };
    cuts.windows(2)
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            let first = a == start;
            let is_deleted = deleted.iter().any(|&(x, y)| x <= a && a < y);
            Run {
                clock: a,
                len: b - a,
                origin: if first { run.origin } else { Some((client, a - 1)) },
                right_origin: run.right_origin,
                parent: if first { run.parent.clone() } else { None },
                parent_sub: if first { run.parent_sub.clone() } else { None },
                content: if is_deleted {
                    Content::Deleted
                } else {
                    Content::Units(kind, units[(a - start) as usize..(b - start) as usize].to_vec())
                },
            }
        })
        .collect()
}

/// The canonical form of a v1 update.
pub fn canonical(update: &[u8]) -> Result<Canonical, String> {
    let mut r = Reader { bytes: update, pos: 0 };
    let mut out = Canonical::default();
    let clients = r.var()?;
    let mut sections: Vec<(u64, Vec<Run>)> = Vec::new();
    for _ in 0..clients {
        let structs = r.var()?;
        let client = r.var()?;
        let mut clock = r.var()?;
        let mut runs = Vec::new();
        for _ in 0..structs {
            let info = r.u8()?;
            let (len, run) = match info & 0x1f {
                0 | 10 => {
                    let len = r.var()?;
                    let content = if info & 0x1f == 0 { Content::Gc } else { Content::Skip };
                    (len, Run { clock, len, origin: None, right_origin: None, parent: None, parent_sub: None, content })
                }
                kind => {
                    let origin = if info & 0x80 != 0 { Some(r.id()?) } else { None };
                    let right_origin = if info & 0x40 != 0 { Some(r.id()?) } else { None };
                    let (mut parent, mut parent_sub) = (None, None);
                    if info & 0xc0 == 0 {
                        parent = Some(if r.var()? == 1 { Parent::Root(r.string()?) } else { Parent::Item(r.id()?) });
                        if info & 0x20 != 0 {
                            parent_sub = Some(r.string()?);
                        }
                    }
                    let mut units: Vec<Vec<u8>> = Vec::new();
                    let content = match kind {
                        1 => {
                            let len = r.var()?;
                            let run = Run { clock, len, origin, right_origin, parent, parent_sub, content: Content::Deleted };
                            clock += len;
                            runs.push(run);
                            continue;
                        }
                        2 => {
                            for _ in 0..r.var()? {
                                units.push(json(&r.string()?));
                            }
                            Content::Units(kind, units)
                        }
                        3 => Content::Units(kind, vec![r.buf()?.to_vec()]),
                        4 => {
                            let text = r.string()?;
                            units.extend(text.encode_utf16().map(|u| u.to_le_bytes().to_vec()));
                            Content::Units(kind, units)
                        }
                        5 => Content::Units(kind, vec![json(&r.string()?)]),
                        6 => {
                            let key = r.string()?;
                            let value = json(&r.string()?);
                            Content::Units(kind, vec![[key.as_bytes(), b"\0", &value].concat()])
                        }
                        7 => {
                            let type_ref = r.var()?;
                            let name = if type_ref == 3 || type_ref == 5 { r.string()? } else { String::new() };
                            Content::Units(kind, vec![format!("{type_ref}:{name}").into_bytes()])
                        }
                        8 => {
                            for _ in 0..r.var()? {
                                let mut unit = Vec::new();
                                r.any(&mut unit, 0)?;
                                units.push(unit);
                            }
                            Content::Units(kind, units)
                        }
                        9 => {
                            let mut unit = r.string()?.into_bytes();
                            unit.push(0);
                            r.any(&mut unit, 0)?;
                            Content::Units(kind, vec![unit])
                        }
                        other => return Err(format!("content ref {other}")),
                    };
                    let len = match &content {
                        Content::Units(_, units) => units.len() as u64,
                        _ => unreachable!(),
                    };
                    (len, Run { clock, len, origin, right_origin, parent, parent_sub, content })
                }
            };
            clock += len;
            runs.push(run);
        }
        sections.push((client, runs));
    }
    let delete_clients = r.var()?;
    for _ in 0..delete_clients {
        let client = r.var()?;
        let ranges = out.deleted.entry(client).or_default();
        for _ in 0..r.var()? {
            let (start, len) = (r.var()?, r.var()?);
            if len > 0 {
                ranges.push((start, start.saturating_add(len)));
            }
        }
    }
    for ranges in out.deleted.values_mut() {
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for &(start, end) in ranges.iter() {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        *ranges = merged;
    }
    out.deleted.retain(|_, ranges| !ranges.is_empty());
    // Clients in ascending order, whatever order the encoder chose. A
    // deleted unit's content is whatever garbage collection left of it
    // (the content, or only its length): it counts as deleted content.
    sections.sort_by_key(|(client, _)| *client);
    for (client, runs) in sections {
        let deleted = out.deleted.get(&client).cloned().unwrap_or_default();
        for run in runs {
            for piece in split_deleted(client, run, &deleted) {
                if piece.len > 0 {
                    out.push(client, piece);
                }
            }
        }
    }
    if r.pos != update.len() {
        return Err("trailing bytes".into());
    }
    Ok(out)
}
