// SPDX-License-Identifier: GPL-2.0
/*
 * devbox_notify: raise, on a network filesystem mounted in this guest, the
 * inotify/fanotify events that a change made on the host would have raised
 * had it been made here. NFS carries no change notifications, so devbox's host
 * side watches each share and writes one record per change to
 * /dev/devbox-notify; this module turns a record into the same fsnotify calls
 * the VFS makes for a local change. It never touches a file: no data, size,
 * mode or time is changed. Before an event it forces the client to refetch the
 * attributes of the path (AT_STATX_FORCE_SYNC), so a watcher that reacts by
 * reading sees the host's new content.
 *
 * Records are lines, "<op> <path>[ <path2>]\n", paths absolute and
 * %-escaped (%XX for any byte outside 0x21..0x7e and for '%'):
 *   c PATH    created (file, symlink, fifo...)   IN_CREATE on the parent
 *   C PATH    directory created                  IN_CREATE|IN_ISDIR
 *   d PATH    removed (file or directory)        IN_DELETE on the parent,
 *             IN_DELETE_SELF + IN_IGNORED on the removed inode when gone
 *   m PATH    data modified                      IN_MODIFY
 *   w PATH    closed after writing               IN_CLOSE_WRITE
 *   a PATH    attributes changed                 IN_ATTRIB
 *   r FROM TO renamed                            IN_MOVED_FROM/IN_MOVED_TO
 *             with one cookie, IN_MOVE_SELF on the moved inode
 * Only root opens the device (0600): the guest is the one raising events for
 * itself, so nothing here is reachable from the host.
 */
#include <linux/fs.h>
#include <linux/fsnotify.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/namei.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/dcache.h>

#define LINE_MAX_BYTES 8192

struct stream {
	size_t len;
	char buf[LINE_MAX_BYTES];
};

static int unescape(char *s)
{
	char *in = s, *out = s;

	while (*in) {
		if (*in == '%') {
			int hi = hex_to_bin(in[1]), lo;

			if (hi < 0)
				return -EINVAL;
			lo = hex_to_bin(in[2]);
			if (lo < 0)
				return -EINVAL;
			*out++ = (char)((hi << 4) | lo);
			in += 3;
		} else {
			*out++ = *in++;
		}
	}
	*out = 0;
	return 0;
}

/* Refetch the attributes from the server so readers see the new state. */
static void refresh(struct path *p)
{
	struct kstat st;

	vfs_getattr(p, &st, STATX_BASIC_STATS, AT_STATX_FORCE_SYNC);
}

/* The parent of PATH (resolved, following its own symlinks as a lookup
 * would) and the last component's name. */
static int parent_of(const char *path, struct path *parent, struct qstr *name,
		     char **copy)
{
	char *slash;
	int err;

	*copy = kstrdup(path, GFP_KERNEL);
	if (!*copy)
		return -ENOMEM;
	slash = strrchr(*copy, '/');
	if (!slash || slash == *copy || !slash[1]) {
		kfree(*copy);
		return -EINVAL;
	}
	*slash = 0;
	name->name = slash + 1;
	name->len = strlen(slash + 1);
	if (name->len > NAME_MAX || !strcmp(slash + 1, ".") ||
	    !strcmp(slash + 1, "..")) {
		kfree(*copy);
		return -EINVAL;
	}
	name->hash = 0;
	err = kern_path(*copy, LOOKUP_DIRECTORY, parent);
	if (err) {
		kfree(*copy);
		return err;
	}
	name->hash = full_name_hash(parent->dentry, name->name, name->len);
	return 0;
}

/* The child's dentry as this guest has it cached, without asking the server
 * (it may be gone there already). */
static struct dentry *cached_child(struct path *parent, struct qstr *name)
{
	struct dentry *d = d_lookup(parent->dentry, name);

	if (d && d_really_is_negative(d)) {
		dput(d);
		return NULL;
	}
	return d;
}

static void dirent_event(const char *path, u32 mask)
{
	struct path parent;
	struct qstr name;
	char *copy;

	if (parent_of(path, &parent, &name, &copy))
		return;
	refresh(&parent);
	fsnotify(mask, d_inode(parent.dentry), FSNOTIFY_EVENT_INODE,
		 d_inode(parent.dentry), &name, NULL, 0);
	path_put(&parent);
	kfree(copy);
}

/* True when the inode behind a cached dentry no longer exists on the server. */
static bool gone(struct path *parent, struct dentry *child)
{
	struct path p = { .mnt = parent->mnt, .dentry = child };
	struct kstat st;
	int err = vfs_getattr(&p, &st, STATX_BASIC_STATS, AT_STATX_FORCE_SYNC);

	return err == -ESTALE || err == -ENOENT || (!err && st.nlink == 0);
}

static void delete_event(const char *path)
{
	struct path parent;
	struct qstr name;
	struct dentry *child;
	struct inode *inode = NULL;
	bool is_dir = false;
	u32 mask = FS_DELETE;
	char *copy;

	if (parent_of(path, &parent, &name, &copy))
		return;
	child = cached_child(&parent, &name);
	if (child) {
		is_dir = d_is_dir(child);
		if (gone(&parent, child))
			inode = d_inode(child);
	}
	if (is_dir)
		mask |= FS_ISDIR;
	refresh(&parent);
	/* The order a local removal has: rmdir raises the directory's DELETE_SELF before
	 * its parent's DELETE; unlink raises DELETE first and DELETE_SELF when the inode
	 * goes. DELETE_SELF, then the marks going (IN_IGNORED), is what eviction of a local
	 * inode does; the dentry goes too, so a later lookup asks the server again. */
	if (inode) {
		ihold(inode);
		if (is_dir)
			fsnotify_inoderemove(inode);
	}
	fsnotify(mask, d_inode(parent.dentry), FSNOTIFY_EVENT_INODE,
		 d_inode(parent.dentry), &name, NULL, 0);
	if (inode) {
		if (!is_dir)
			fsnotify_inoderemove(inode);
		d_invalidate(child);
		iput(inode);
	} else if (child) {
		/* Another hard link remains: its link count changed. */
		fsnotify_inode(d_inode(child), FS_ATTRIB);
	}
	if (child)
		dput(child);
	path_put(&parent);
	kfree(copy);
}

static void child_event(const char *path, u32 mask)
{
	struct path parent, p;
	struct qstr name;
	struct dentry *child;
	char *copy;

	if (parent_of(path, &parent, &name, &copy))
		return;
	/* The cached entry first: a lookup would revalidate it against the
	 * server and, were it already gone there, drop the dentry a watcher
	 * holds before its delete record arrives. Only an entry this guest
	 * has never seen is looked up. */
	child = cached_child(&parent, &name);
	if (!child) {
		child = lookup_one_unlocked(mnt_idmap(parent.mnt), name.name,
					    parent.dentry, name.len);
		if (IS_ERR(child) || d_really_is_negative(child)) {
			if (!IS_ERR(child))
				dput(child);
			goto out;
		}
	}
	p.mnt = parent.mnt;
	p.dentry = child;
	refresh(&p);
	fsnotify_parent(child, mask, d_inode(child), FSNOTIFY_EVENT_INODE);
	dput(child);
out:
	path_put(&parent);
	kfree(copy);
}

static void rename_event(const char *from, const char *to)
{
	struct path old_parent, new_parent, moved;
	struct qstr old_name, new_name;
	char *old_copy, *new_copy;
	struct dentry *cached;
	u32 cookie, isdir = 0;

	if (parent_of(from, &old_parent, &old_name, &old_copy))
		return;
	if (parent_of(to, &new_parent, &new_name, &new_copy)) {
		path_put(&old_parent);
		kfree(old_copy);
		return;
	}
	refresh(&old_parent);
	refresh(&new_parent);
	cached = cached_child(&old_parent, &old_name);
	if (cached) {
		/* The old name is gone on the server: let the next lookup
		 * of either name ask it. */
		d_invalidate(cached);
		dput(cached);
	}
	if (kern_path(to, 0, &moved) == 0) {
		if (d_is_dir(moved.dentry))
			isdir = FS_ISDIR;
	} else {
		moved.dentry = NULL;
	}
	cookie = fsnotify_get_cookie();
	fsnotify(FS_MOVED_FROM | isdir, d_inode(old_parent.dentry),
		 FSNOTIFY_EVENT_INODE, d_inode(old_parent.dentry), &old_name,
		 NULL, cookie);
	fsnotify(FS_MOVED_TO | isdir, d_inode(new_parent.dentry),
		 FSNOTIFY_EVENT_INODE, d_inode(new_parent.dentry), &new_name,
		 NULL, cookie);
	if (moved.dentry) {
		fsnotify_inode(d_inode(moved.dentry), FS_MOVE_SELF);
		path_put(&moved);
	}
	path_put(&old_parent);
	path_put(&new_parent);
	kfree(old_copy);
	kfree(new_copy);
}

static void apply(char *line)
{
	char *op = strsep(&line, " ");
	char *a = strsep(&line, " ");
	char *b = line;

	if (!op || !a || op[0] == 0 || op[1] != 0 || a[0] != '/' || unescape(a))
		return;
	if (op[0] == 'r') {
		if (!b || b[0] != '/' || unescape(b))
			return;
		rename_event(a, b);
		return;
	}
	if (b)
		return;
	switch (op[0]) {
	case 'c':
		dirent_event(a, FS_CREATE);
		break;
	case 'C':
		dirent_event(a, FS_CREATE | FS_ISDIR);
		break;
	case 'd':
		delete_event(a);
		break;
	case 'm':
		child_event(a, FS_MODIFY);
		break;
	case 'w':
		child_event(a, FS_CLOSE_WRITE);
		break;
	case 'a':
		child_event(a, FS_ATTRIB);
		break;
	}
}

static int notify_open(struct inode *inode, struct file *file)
{
	struct stream *s = kzalloc(sizeof(*s), GFP_KERNEL);

	if (!s)
		return -ENOMEM;
	file->private_data = s;
	return 0;
}

static int notify_release(struct inode *inode, struct file *file)
{
	kfree(file->private_data);
	return 0;
}

/* A byte stream of records: a record may span writes (a pipe or an SSH
 * channel splits wherever it likes). A line longer than the buffer is
 * dropped whole. */
static ssize_t notify_write(struct file *file, const char __user *ubuf,
			    size_t count, loff_t *ppos)
{
	struct stream *s = file->private_data;
	size_t done = 0;

	while (done < count) {
		size_t room = LINE_MAX_BYTES - s->len;
		size_t n = min(room, count - done);
		size_t i, start = 0;

		if (copy_from_user(s->buf + s->len, ubuf + done, n))
			return done ? done : -EFAULT;
		for (i = s->len; i < s->len + n; i++) {
			if (s->buf[i] != '\n')
				continue;
			s->buf[i] = 0;
			apply(s->buf + start);
			start = i + 1;
		}
		s->len += n;
		done += n;
		if (start) {
			memmove(s->buf, s->buf + start, s->len - start);
			s->len -= start;
		} else if (s->len == LINE_MAX_BYTES) {
			s->len = 0; /* overlong: drop it */
		}
		cond_resched();
	}
	return done;
}

static const struct file_operations notify_fops = {
	.owner = THIS_MODULE,
	.open = notify_open,
	.release = notify_release,
	.write = notify_write,
	.llseek = noop_llseek,
};

static struct miscdevice notify_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "devbox-notify",
	.fops = &notify_fops,
	.mode = 0600,
};

module_misc_device(notify_dev);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("devbox: host file changes raised as local fsnotify events");
