//! How much zone a configuration needs, computed the way nginx's slab allocator
//! lays memory out, so that `nginx -t` can say how much to ask for.

use ahash::AHashMap;
use ngx::ffi::{ngx_pagesize, ngx_slab_page_t, ngx_slab_pool_t, ngx_slab_stat_t};

use super::{LongLivedCells, Record, ServiceSlot, ZoneHeader};

/// A file larger than this that cannot fit the zone is refused from its size
/// alone, unparsed; a smaller one is parsed, so that the refusal says exactly
/// how much it needs (parsing 1 MB takes well under a second).
pub const PARSE_BEFORE_REFUSING: usize = 1 << 20;

/// The smallest zone that holds a configuration: the slab pool's own bookkeeping,
/// the header, a slot per service (and its long-lived cells), and the record twice over (while a new one is
/// written, the old one still serves). Computed the way `ngx_slab_init` and
/// `ngx_slab_alloc` lay out memory, so `nginx -t` can say how much to ask for.
pub fn required_zone_size(path_len: usize, text_len: usize, services: &[&str], cells: usize) -> usize {
    // SAFETY: ngx_pagesize is set by ngx_os_init before any configuration is read.
    let page = unsafe { ngx_pagesize };
    let max_small = page / 2;
    let class = |size: usize| size.max(8).next_power_of_two();
    // Small allocations share pages of their size class; large ones take whole pages.
    let mut small: AHashMap<usize, usize> = AHashMap::new();
    let mut pages = 0;
    let mut add = |size: usize| {
        if size > max_small {
            pages += size.div_ceil(page);
        } else {
            *small.entry(class(size)).or_default() += 1;
        }
    };
    add(size_of::<ZoneHeader>());
    for name in services {
        add(ServiceSlot::size(cells, name.len()));
        add(size_of::<LongLivedCells>());
    }
    let record = Record::size(services.len(), path_len, text_len);
    add(record);
    add(record);
    pages += small.iter().map(|(&class, &count)| (count * class).div_ceil(page)).sum::<usize>();
    let classes = page.trailing_zeros() as usize - 3;
    let bookkeeping =
        size_of::<ngx_slab_pool_t>() + classes * (size_of::<ngx_slab_page_t>() + size_of::<ngx_slab_stat_t>());
    // One page descriptor per page, and up to a page lost aligning the first page.
    bookkeeping + pages * (page + size_of::<ngx_slab_page_t>()) + page
}

/// A size in bytes as nginx's configuration would write it, rounded up.
pub fn human_size(bytes: usize) -> String {
    const K: usize = 1024;
    if bytes >= 10 * K * K {
        format!("{}m", bytes.div_ceil(K * K))
    } else {
        format!("{}k", bytes.div_ceil(K))
    }
}
