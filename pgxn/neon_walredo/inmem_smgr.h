/*
 * inmem_smgr.h: the in-memory storage manager of the wal-redo helper.
 */
#ifndef NEON_WALREDO_INMEM_SMGR_H
#define NEON_WALREDO_INMEM_SMGR_H

#include "storage/buf_internals.h"
#include "storage/smgr.h"

/* smgr_hook and smgr_init_hook implementations (see smgr.h) */
extern const f_smgr *smgr_inmem(BackendId backend, RelFileNode rnode);
extern void smgr_init_inmem(void);

/* Forgets every stored page and makes 'tag' the page being rebuilt. */
extern void inmem_set_target(const BufferTag *tag);

/* Stores the base image of the target page. */
extern void inmem_store_target(const char *page);

#endif							/* NEON_WALREDO_INMEM_SMGR_H */
