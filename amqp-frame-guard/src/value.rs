//! A streaming check of AMQP-encoded values: every declared size and count must fit in what
//! encloses it, before fe2o3 sees the bytes.
//!
//! Why: fe2o3-amqp 0.18.4 decodes performatives, SASL frames and messages through serde_amqp's
//! `IoReader`, whose `read_bytes(n)` allocates `n` bytes before reading them. A 358-byte frame
//! whose `str32` declares 3 GB therefore costs 3 GB. The walker follows the AMQP type system
//! (AMQP 1.0 part 1, section 1.6) byte by byte, carries its state across reads and frames, and
//! refuses a size that reaches past its container (or past the frame, for a performative).
//! Binary, string and symbol contents are skipped by counting, never looked at.

/// How deep lists, maps and arrays may nest. serde_amqp decodes by recursion; what the service
/// sends nests a handful of levels (filters, annotations).
const MAX_NESTING: usize = 32;

/// How many elements an array of a zero-width type (null, true, false, uint0, ulong0, list0)
/// may declare: its elements take no bytes, so its size cannot bound them.
const MAX_ZERO_WIDTH_ELEMENTS: u64 = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    /// One value: its constructor is read from the stream unless an array gave it.
    Value { code: Option<u8> },
    /// Bytes whose bounds are already checked: a fixed-width value, a binary's content.
    Skip { left: u64 },
    /// A big-endian size or count of `width` bytes, then `then`.
    Field {
        width: u8,
        have: u8,
        acc: u64,
        then: After,
    },
    /// The elements of a list, map or array, ending at `end`; `outer` is where the enclosing
    /// container ends.
    Elements {
        end: u64,
        outer: u64,
        left: u64,
        code: Option<u8>,
    },
    /// An array's element constructor (after any descriptor), then `count` elements.
    ArrayCode { end: u64, outer: u64, count: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// The size of a binary, string or symbol.
    Variable {
        code: u8,
    },
    /// The size of a list or map, then its count of `width` bytes.
    CompoundSize {
        code: u8,
        width: u8,
    },
    CompoundCount,
    ArraySize {
        code: u8,
        width: u8,
    },
    ArrayCount,
}

/// Checks a sequence of AMQP values fed in pieces.
#[derive(Debug, Clone)]
pub(crate) struct Walker {
    /// Bytes consumed so far.
    pos: u64,
    /// How many more top-level values to read; `None` for any number.
    values_left: Option<u32>,
    stack: Vec<Task>,
    /// Where the innermost container (or the whole sequence) ends.
    bound: u64,
    /// How many containers are open.
    nesting: usize,
}

impl Default for Walker {
    fn default() -> Self {
        Self::values(0)
    }
}

impl Walker {
    /// Exactly one value (a performative) in the next `len` bytes.
    pub(crate) fn one_value(len: u64) -> Self {
        let mut walker = Self::values(len);
        walker.values_left = Some(1);
        walker
    }

    /// Any number of values (a message's sections) in at most `len` bytes.
    pub(crate) fn values(len: u64) -> Self {
        Self {
            pos: 0,
            values_left: None,
            stack: Vec::new(),
            bound: len,
            nesting: 0,
        }
    }

    /// Starts over as [`Walker::one_value`], keeping the stack's allocation (one walk per frame).
    pub(crate) fn reset_to_one_value(&mut self, len: u64) {
        self.reset_to(Self::one_value(len));
    }

    /// Starts over as [`Walker::values`], keeping the stack's allocation.
    pub(crate) fn reset_to_values(&mut self, len: u64) {
        self.reset_to(Self::values(len));
    }

    fn reset_to(&mut self, fresh: Self) {
        let mut stack = std::mem::replace(self, fresh).stack;
        stack.clear();
        self.stack = stack;
    }

    /// Bytes consumed so far. After a refusal it counts the byte the refusal is about, and
    /// every byte before it, whether they came in one piece or many.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Between values: nothing started and not finished.
    pub(crate) fn at_boundary(&self) -> bool {
        self.stack.is_empty()
    }

    /// The one value of [`Walker::one_value`] is complete.
    pub(crate) fn done(&self) -> bool {
        self.stack.is_empty() && self.values_left == Some(0)
    }

    /// Consumes bytes until they run out or the last wanted value is complete; returns how many
    /// it consumed. An error names the first thing that does not fit.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<usize, String> {
        let mut at = 0;
        loop {
            let Some(task) = self.stack.last_mut() else {
                if at == bytes.len() || self.values_left == Some(0) {
                    return Ok(at);
                }
                if let Some(left) = &mut self.values_left {
                    *left -= 1;
                }
                self.stack.push(Task::Value { code: None });
                continue;
            };
            match *task {
                Task::Value { code: Some(code) } => {
                    self.stack.pop();
                    at += self.start(code, &bytes[at..])?;
                }
                Task::Value { code: None } => {
                    let Some(&code) = bytes.get(at) else {
                        return Ok(at);
                    };
                    self.take_byte()?;
                    at += 1;
                    self.stack.pop();
                    at += self.start(code, &bytes[at..])?;
                }
                Task::Skip { left } => {
                    if left == 0 {
                        self.stack.pop();
                        continue;
                    }
                    if at == bytes.len() {
                        return Ok(at);
                    }
                    let n = left.min((bytes.len() - at) as u64);
                    at += n as usize;
                    self.pos += n;
                    *task = Task::Skip { left: left - n };
                }
                Task::Field {
                    width,
                    have,
                    acc,
                    then,
                } => {
                    if have == width {
                        self.stack.pop();
                        self.after(then, acc)?;
                        continue;
                    }
                    let want = usize::from(width - have);
                    let got = want.min(bytes.len() - at);
                    if got == 0 {
                        return Ok(at);
                    }
                    let acc = bytes[at..at + got]
                        .iter()
                        .fold(acc, |acc, &byte| (acc << 8) | u64::from(byte));
                    at += got;
                    self.pos += got as u64;
                    *task = Task::Field {
                        width,
                        have: have + got as u8,
                        acc,
                        then,
                    };
                }
                Task::Elements {
                    end,
                    outer,
                    left,
                    code,
                } => {
                    if left == 0 {
                        if self.pos != end {
                            return Err(format!(
                                "a container ends {} bytes before the size it declares",
                                end - self.pos
                            ));
                        }
                        self.stack.pop();
                        self.close(outer);
                        continue;
                    }
                    *task = Task::Elements {
                        end,
                        outer,
                        left: left - 1,
                        code,
                    };
                    // The element, at once where its constructor is in hand.
                    let code = match code {
                        Some(code) => code,
                        None => match bytes.get(at) {
                            Some(&code) => {
                                self.take_byte()?;
                                at += 1;
                                code
                            }
                            None => {
                                self.stack.push(Task::Value { code: None });
                                return Ok(at);
                            }
                        },
                    };
                    at += self.start(code, &bytes[at..])?;
                }
                Task::ArrayCode { end, outer, count } => {
                    let Some(&code) = bytes.get(at) else {
                        return Ok(at);
                    };
                    self.take_byte()?;
                    at += 1;
                    if code == 0x00 {
                        // A described element type: its descriptor, then (still here) its code.
                        self.push(Task::Value { code: None })?;
                        continue;
                    }
                    self.stack.pop();
                    self.close(outer);
                    self.array_elements(end, count, code)?;
                }
            }
        }
    }

    fn room(&self) -> u64 {
        self.bound.saturating_sub(self.pos)
    }

    /// A constructor byte: it must lie inside its container. Taken before it is checked, as
    /// every byte is, so that [`Walker::pos`] after a refusal is the same however the bytes
    /// were cut.
    fn take_byte(&mut self) -> Result<(), String> {
        let room = self.room();
        self.pos += 1;
        if room == 0 {
            return Err(format!(
                "a value starts past the end of its {}",
                self.container_name()
            ));
        }
        Ok(())
    }

    fn container_name(&self) -> &'static str {
        if self.nesting > 0 {
            "container"
        } else {
            "frame or message"
        }
    }

    fn push(&mut self, task: Task) -> Result<(), String> {
        // Descriptors of descriptors also recurse in serde_amqp: bound the whole stack too.
        if self.stack.len() > 4 * MAX_NESTING {
            return Err(format!("values nest deeper than {MAX_NESTING} levels"));
        }
        self.stack.push(task);
        Ok(())
    }

    /// Opens a container ending at `end`: pushes what `container` makes of the bound outside.
    fn open(&mut self, end: u64, container: impl FnOnce(u64) -> Task) -> Result<(), String> {
        if self.nesting >= MAX_NESTING {
            return Err(format!("values nest deeper than {MAX_NESTING} levels"));
        }
        self.push(container(self.bound))?;
        self.nesting += 1;
        self.bound = end;
        Ok(())
    }

    /// Opens a list, map or array body of `left` elements (of type `code` in an array).
    fn open_elements(&mut self, end: u64, left: u64, code: Option<u8>) -> Result<(), String> {
        self.open(end, |outer| Task::Elements {
            end,
            outer,
            left,
            code,
        })
    }

    /// Closes the innermost container (already popped), whose outside ends at `outer`.
    fn close(&mut self, outer: u64) {
        self.nesting -= 1;
        self.bound = outer;
    }

    /// Checks that `len` more bytes fit where the walk is.
    fn fits(&self, len: u64, what: &str) -> Result<(), String> {
        let room = self.room();
        if len > room {
            return Err(format!(
                "{what} declares {len} bytes where {room} remain in its {}",
                self.container_name()
            ));
        }
        Ok(())
    }

    /// A value whose constructor is `code`, with `rest` the bytes after the constructor that
    /// are in hand: a primitive value is checked and passed over at once where they hold it
    /// (the common case, and most of the guard's cost per event otherwise); anything else is
    /// set up as tasks. Returns how many bytes of `rest` it passed over.
    fn start(&mut self, code: u8, rest: &[u8]) -> Result<usize, String> {
        if code == 0x00 {
            // Described: the descriptor (on top), then the value.
            self.push(Task::Value { code: None })?;
            self.push(Task::Value { code: None })?;
            return Ok(0);
        }
        if let Some(width) = fixed_width(code) {
            self.fits(width, code_name(code))?;
            if rest.len() as u64 >= width {
                self.pos += width;
                return Ok(width as usize);
            }
            self.push(Task::Skip { left: width })?;
            return Ok(0);
        }
        let size_width = match code {
            0xa0 | 0xa1 | 0xa3 => Some(1),
            0xb0 | 0xb1 | 0xb3 => Some(4),
            _ => None,
        };
        if let Some(size_width) = size_width.filter(|&width| rest.len() >= width) {
            self.fits(size_width as u64, code_name(code))?;
            let size = rest[..size_width]
                .iter()
                .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte));
            self.pos += size_width as u64;
            self.fits(size, code_name(code))?;
            let in_hand = size.min((rest.len() - size_width) as u64);
            self.pos += in_hand;
            if in_hand < size {
                self.push(Task::Skip {
                    left: size - in_hand,
                })?;
            }
            return Ok(size_width + in_hand as usize);
        }
        self.start_tasks(code)?;
        Ok(0)
    }

    /// A value whose constructor is `code` and whose bytes are to come, as tasks.
    fn start_tasks(&mut self, code: u8) -> Result<(), String> {
        let (width, then) = match code {
            0xa0 | 0xa1 | 0xa3 => (1, After::Variable { code }),
            0xb0 | 0xb1 | 0xb3 => (4, After::Variable { code }),
            0xc0 | 0xc1 => (1, After::CompoundSize { code, width: 1 }),
            0xd0 | 0xd1 => (4, After::CompoundSize { code, width: 4 }),
            0xe0 => (1, After::ArraySize { code, width: 1 }),
            0xf0 => (4, After::ArraySize { code, width: 4 }),
            _ => return Err(format!("0x{code:02x} is not an AMQP format code")),
        };
        self.fits(u64::from(width), code_name(code))?;
        self.push(Task::Field {
            width,
            have: 0,
            acc: 0,
            then,
        })
    }

    fn after(&mut self, then: After, value: u64) -> Result<(), String> {
        match then {
            After::Variable { code } => {
                self.fits(value, code_name(code))?;
                self.push(Task::Skip { left: value })
            }
            After::CompoundSize { code, width } | After::ArraySize { code, width } => {
                self.fits(value, code_name(code))?;
                if value < u64::from(width) {
                    return Err(format!(
                        "{} declares {value} bytes, too few for its {width}-byte count",
                        code_name(code)
                    ));
                }
                let end = self.pos + value;
                // The count (read next) fills in the container's element count.
                let then = if matches!(then, After::CompoundSize { .. }) {
                    self.open_elements(end, 0, None)?;
                    After::CompoundCount
                } else {
                    self.open(end, |outer| Task::ArrayCode {
                        end,
                        outer,
                        count: 0,
                    })?;
                    After::ArrayCount
                };
                self.push(Task::Field {
                    width,
                    have: 0,
                    acc: 0,
                    then,
                })
            }
            After::CompoundCount => {
                // Every element takes at least its constructor byte.
                let room = self.room();
                if value > room {
                    return Err(format!(
                        "a list or map declares {value} elements in {room} bytes"
                    ));
                }
                if let Some(Task::Elements { left, .. }) = self.stack.last_mut() {
                    *left = value;
                }
                Ok(())
            }
            After::ArrayCount => {
                if let Some(Task::ArrayCode { count, .. }) = self.stack.last_mut() {
                    *count = value;
                }
                Ok(())
            }
        }
    }

    /// An array's `count` elements of type `code`, ending at `end`.
    fn array_elements(&mut self, end: u64, count: u64, code: u8) -> Result<(), String> {
        let room = end - self.pos;
        match fixed_width(code) {
            Some(0) if count > MAX_ZERO_WIDTH_ELEMENTS => Err(format!(
                "an array declares {count} elements of zero width (at most \
                 {MAX_ZERO_WIDTH_ELEMENTS} are accepted)"
            )),
            Some(width) => {
                let len = count.checked_mul(width).filter(|&len| len <= room);
                let Some(len) = len else {
                    return Err(format!(
                        "an array declares {count} elements of {width} bytes in {room} bytes"
                    ));
                };
                self.open_elements(end, 0, None)?;
                self.push(Task::Skip { left: len })
            }
            None if code == 0x00 || !is_format_code(code) => {
                Err(format!("0x{code:02x} is not an AMQP format code"))
            }
            None => {
                // Each element takes at least one byte of its own size field.
                if count > room {
                    return Err(format!(
                        "an array declares {count} elements in {room} bytes"
                    ));
                }
                self.open_elements(end, count, Some(code))
            }
        }
    }
}

/// The width of a fixed-width format code's data; `None` for the others.
fn fixed_width(code: u8) -> Option<u64> {
    match code {
        0x40..=0x45 => Some(0),
        0x50..=0x56 => Some(1),
        0x60 | 0x61 => Some(2),
        0x70..=0x74 => Some(4),
        0x80..=0x84 => Some(8),
        0x94 | 0x98 => Some(16),
        _ => None,
    }
}

fn is_format_code(code: u8) -> bool {
    fixed_width(code).is_some()
        || matches!(
            code,
            0xa0 | 0xa1 | 0xa3 | 0xb0 | 0xb1 | 0xb3 | 0xc0 | 0xc1 | 0xd0 | 0xd1 | 0xe0 | 0xf0
        )
}

fn code_name(code: u8) -> &'static str {
    match code {
        0xa0 => "a vbin8",
        0xa1 => "a str8",
        0xa3 => "a sym8",
        0xb0 => "a vbin32",
        0xb1 => "a str32",
        0xb3 => "a sym32",
        0xc0 => "a list8",
        0xc1 => "a map8",
        0xd0 => "a list32",
        0xd1 => "a map32",
        0xe0 => "an array8",
        0xf0 => "an array32",
        _ => "a fixed-width value",
    }
}

/// What the guard needs of a transfer performative: which link's delivery its payload
/// continues, whether more frames follow, whether the delivery was aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TransferFields {
    pub handle: u32,
    pub more: bool,
    pub aborted: bool,
}

/// The descriptor of the transfer performative (AMQP 1.0 part 2, section 2.7.5).
const TRANSFER_CODE: u64 = 0x14;
const TRANSFER_NAME: &[u8] = b"amqp:transfer:list";

/// Reads a performative that [`Walker`] has checked; `None` unless it is a transfer.
pub(crate) fn transfer_fields(performative: &[u8]) -> Option<TransferFields> {
    let mut at = Cursor(performative);
    if at.byte()? != 0x00 || !at.is_transfer_descriptor()? {
        return None;
    }
    let count = match at.byte()? {
        0x45 => 0,
        0xc0 => {
            at.take(1)?;
            u32::from(at.byte()?)
        }
        0xd0 => {
            at.take(4)?;
            at.u32()?
        }
        _ => return None,
    };
    let mut fields = TransferFields {
        handle: 0,
        more: false,
        aborted: false,
    };
    for index in 0..count.min(10) {
        let start = at.0;
        match index {
            0 => fields.handle = at.uint().unwrap_or(0),
            5 => fields.more = at.boolean().unwrap_or(false),
            9 => fields.aborted = at.boolean().unwrap_or(false),
            _ => {}
        }
        // Whatever the field held, go on from its start.
        at.0 = start;
        at.skip_value()?;
    }
    Some(fields)
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if n > self.0.len() {
            return None;
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(taken)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn is_transfer_descriptor(&mut self) -> Option<bool> {
        Some(match self.byte()? {
            0x53 => u64::from(self.byte()?) == TRANSFER_CODE,
            0x80 => u64::from_be_bytes(self.take(8)?.try_into().ok()?) == TRANSFER_CODE,
            0xa3 => {
                let len = self.byte()?;
                self.take(usize::from(len))? == TRANSFER_NAME
            }
            0xb3 => {
                let len = self.u32()?;
                self.take(len as usize)? == TRANSFER_NAME
            }
            _ => false,
        })
    }

    fn uint(&mut self) -> Option<u32> {
        match self.byte()? {
            0x43 => Some(0),
            0x52 => self.byte().map(u32::from),
            0x70 => self.u32(),
            _ => None,
        }
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.byte()? {
            0x41 => Some(true),
            0x42 | 0x40 => Some(false),
            0x56 => Some(self.byte()? != 0),
            _ => None,
        }
    }

    /// Skips one value of checked bytes.
    fn skip_value(&mut self) -> Option<()> {
        let code = self.byte()?;
        if code == 0x00 {
            self.skip_value()?;
            return self.skip_value();
        }
        if let Some(width) = fixed_width(code) {
            return self.take(width as usize).map(drop);
        }
        let len = match code {
            0xa0 | 0xa1 | 0xa3 | 0xc0 | 0xc1 | 0xe0 => usize::from(self.byte()?),
            0xb0 | 0xb1 | 0xb3 | 0xd0 | 0xd1 | 0xf0 => self.u32()? as usize,
            _ => return None,
        };
        self.take(len).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` whole and byte by byte; both must agree.
    fn walk(mut walker: Walker, bytes: &[u8]) -> Result<Walker, String> {
        let mut whole = walker.clone();
        let whole_result = whole.feed(bytes).map(|_| ());
        let mut piecewise = Ok(());
        for byte in bytes {
            if walker.done() {
                break;
            }
            if let Err(error) = walker.feed(std::slice::from_ref(byte)) {
                piecewise = Err(error);
                break;
            }
        }
        // The same answer, the same bytes consumed (up to a refusal's byte), the same state.
        assert_eq!(
            (&whole_result, whole.pos, &whole.stack),
            (&piecewise, walker.pos, &walker.stack),
            "whole and piecewise feeding disagree on {bytes:02x?}"
        );
        whole_result.map(|()| whole)
    }

    fn one(bytes: &[u8]) -> Result<Walker, String> {
        walk(Walker::one_value(bytes.len() as u64), bytes)
    }

    /// An attach-like performative: described list of strings, a map, an array of symbols.
    fn performative() -> Vec<u8> {
        let mut list = vec![0x05]; // count
        list.extend([0xa1, 3, b'a', b'b', b'c']);
        list.extend([0x52, 7]);
        list.extend([0xc1, 5, 2, 0xa3, 1, b'k', 0x41]); // map8 {k: true}
        list.extend([0xe0, 7, 2, 0xa3, 2, b'x', b'y', 1, b'z']); // array8 of sym8
        list.extend([0x00, 0x53, 0x70, 0xc0, 0x01, 0x00]); // described empty list8
        let mut bytes = vec![0x00, 0x53, 0x12, 0xc0, list.len() as u8];
        bytes.extend(list);
        bytes
    }

    #[test]
    fn a_valid_performative_is_one_complete_value() {
        let bytes = performative();
        let walker = one(&bytes).unwrap();
        assert!(walker.done());
        assert_eq!(walker.pos, bytes.len() as u64);
    }

    #[test]
    fn a_performative_stops_at_its_end() {
        let mut bytes = performative();
        let len = bytes.len();
        bytes.extend([0xb0, 0xff, 0xff, 0xff, 0xff]); // the payload is not the performative's
        let mut walker = Walker::one_value(bytes.len() as u64);
        assert_eq!(walker.feed(&bytes).unwrap(), len);
        assert!(walker.done());
    }

    #[test]
    fn the_fuzzers_str32_is_refused() {
        // A described list whose str32 declares 0xb1b1b1b1 bytes in a small frame.
        let bytes = [
            0x00, 0x53, 0x10, 0xc0, 0x20, 0x02, 0xb1, 0xb1, 0xb1, 0xb1, 0xb1, 0, 0, 0,
        ];
        let error = walk(Walker::one_value(350), &bytes).unwrap_err();
        assert!(
            error.contains("a str32 declares 2981212593 bytes"),
            "{error}"
        );
    }

    #[test]
    fn sizes_past_their_container_are_refused() {
        // A vbin8 of 5 bytes inside a list8 of 4.
        let error = one(&[0xc0, 0x04, 0x01, 0xa0, 0x05, 1, 2, 3, 4, 5]).unwrap_err();
        assert_eq!(
            error,
            "a vbin8 declares 5 bytes where 1 remain in its container"
        );
        // A list larger than the frame.
        let error = walk(Walker::one_value(10), &[0xd0, 0, 0, 1, 0]).unwrap_err();
        assert_eq!(
            error,
            "a list32 declares 256 bytes where 5 remain in its frame or message"
        );
        // A fixed-width value cut by its container's end.
        let error = one(&[0xc0, 0x03, 0x01, 0x70, 0, 0, 0, 0]).unwrap_err();
        assert!(
            error.contains("a fixed-width value declares 4 bytes"),
            "{error}"
        );
    }

    #[test]
    fn counts_that_cannot_fit_are_refused() {
        let error = one(&[0xc0, 0x02, 0xff, 0x40]).unwrap_err();
        assert_eq!(error, "a list or map declares 255 elements in 1 bytes");
        // An array of 2^32-1 ulongs in 9 bytes.
        let error = one(&[0xf0, 0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0, 0]).unwrap_err();
        assert!(error.contains("4294967295 elements of 8 bytes"), "{error}");
        // Four billion nulls in five bytes.
        let error = one(&[0xf0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x40]).unwrap_err();
        assert!(error.contains("zero width"), "{error}");
        // Fewer elements than the size says.
        let error = one(&[0xc0, 0x03, 0x01, 0x40, 0x40]).unwrap_err();
        assert_eq!(
            error,
            "a container ends 1 bytes before the size it declares"
        );
    }

    #[test]
    fn unknown_format_codes_are_refused() {
        for code in [0x01, 0x46, 0x57, 0x99, 0xa2, 0xc2, 0xe1, 0xff] {
            let error = one(&[code, 0, 0, 0, 0, 0]).unwrap_err();
            assert_eq!(error, format!("0x{code:02x} is not an AMQP format code"));
        }
    }

    #[test]
    fn nesting_is_bounded() {
        // list32s inside list32s, each as large as its parent allows.
        let mut deep = Vec::new();
        for level in 0..40u32 {
            let size = (1u32 << 20) - (9 * level + 5);
            deep.push(0xd0);
            deep.extend(size.to_be_bytes());
            deep.extend(1u32.to_be_bytes());
        }
        let error = walk(Walker::one_value(1 << 20), &deep).unwrap_err();
        assert!(error.contains("nest deeper"), "{error}");
        let descriptors = vec![0x00; 1000];
        let error = walk(Walker::one_value(1 << 20), &descriptors).unwrap_err();
        assert!(error.contains("nest deeper"), "{error}");
    }

    #[test]
    fn arrays_of_described_and_variable_elements() {
        // array8 of two described (0x00 0x53 0x01) str8 elements.
        let bytes = [
            0xe0, 0x0a, 0x02, 0x00, 0x53, 0x01, 0xa1, 1, b'a', 2, b'b', b'c',
        ];
        let walker = one(&bytes).unwrap();
        assert!(walker.done());
        // The second element's size past the array's end.
        let bytes = [0xe0, 0x07, 0x02, 0xa1, 1, b'a', 9, b'b', b'c'];
        assert!(one(&bytes).unwrap_err().contains("a str8 declares 9 bytes"));
    }

    #[test]
    fn message_sections_are_checked_across_pieces() {
        // header (described list), data (described vbin32 of 1000 bytes), cut anywhere.
        let mut message = vec![0x00, 0x53, 0x70, 0x45];
        message.extend([0x00, 0x53, 0x75, 0xb0, 0, 0, 0x03, 0xe8]);
        message.extend([7u8; 1000]);
        for cut in 0..message.len() {
            let mut walker = Walker::values(64 << 20);
            let (a, b) = message.split_at(cut);
            assert_eq!(walker.feed(a).unwrap(), a.len());
            assert_eq!(walker.feed(b).unwrap(), b.len());
            assert!(walker.at_boundary());
        }
        // Cut inside the data: not at a boundary.
        let mut walker = Walker::values(64 << 20);
        walker.feed(&message[..20]).unwrap();
        assert!(!walker.at_boundary());
        // A section larger than the message limit.
        let error = Walker::values(1024)
            .feed(&[0x00, 0x53, 0x75, 0xb0, 0, 0, 0x08, 0])
            .unwrap_err();
        assert!(error.contains("a vbin32 declares 2048 bytes"), "{error}");
    }

    fn transfer(fields: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = fields.concat();
        let mut bytes = vec![
            0x00,
            0x53,
            0x14,
            0xc0,
            (body.len() + 1) as u8,
            fields.len() as u8,
        ];
        bytes.extend(body);
        bytes
    }

    #[test]
    fn transfer_fields_are_read() {
        let t = transfer(&[
            &[0x52, 3],       // handle
            &[0x43],          // delivery-id
            &[0xa0, 2, 1, 2], // delivery-tag
            &[0x43],          // message-format
            &[0x42],          // settled
            &[0x41],          // more
        ]);
        assert!(one(&t).unwrap().done());
        assert_eq!(
            transfer_fields(&t),
            Some(TransferFields {
                handle: 3,
                more: true,
                aborted: false
            })
        );
        let mut fields: Vec<&[u8]> = vec![&[0x70, 0, 1, 0, 0], &[0x40], &[0x40], &[0x40], &[0x40]];
        fields.extend([
            &[0x56, 0][..],
            &[0x40],
            &[0x00, 0x53, 0x24, 0x45],
            &[0x40],
            &[0x41],
        ]);
        let t = transfer(&fields);
        assert!(one(&t).unwrap().done());
        assert_eq!(
            transfer_fields(&t),
            Some(TransferFields {
                handle: 65536,
                more: false,
                aborted: true
            })
        );
        // By symbol descriptor; and other performatives are not transfers.
        let mut named = vec![0x00, 0xa3, TRANSFER_NAME.len() as u8];
        named.extend(TRANSFER_NAME);
        named.extend([0xc0, 0x03, 0x01, 0x52, 9]);
        assert_eq!(transfer_fields(&named).map(|t| t.handle), Some(9));
        assert_eq!(transfer_fields(&performative()), None);
        assert_eq!(
            transfer_fields(&[0x00, 0x53, 0x14, 0x45]).map(|t| t.more),
            Some(false)
        );
    }
}
