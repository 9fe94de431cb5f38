// SPDX-License-Identifier: GPL-2.0
/*
 * rebar_emu - emulate a PCIe Resizable BAR capability on one function.
 *
 * TEST GUEST ONLY.  Loaded by the passthrough-hook test harness inside a
 * throw-away QEMU guest; never load it on a real machine.
 *
 * No QEMU device emulates ReBAR, yet the product has to drive the kernel's
 * resourceN_resize sysfs interface.  This module wraps the config accessors
 * of the bus that holds the target function (pci_bus_set_ops()) and, for
 * that function only:
 *
 *   - presents a ReBAR extended capability (ID 0x15) at offset 0x100 with
 *     one entry for BAR <bar>, advertising the sizes in <sizes>;
 *   - keeps the capability's control register (current size) in memory;
 *   - masks the BAR register on reads so that BAR sizing sees the size the
 *     control register selects.  The emulated device really decodes only its
 *     original size, so every advertised size must be >= the original one:
 *     the kernel then aligns the BAR to the bigger size, which is aligned
 *     for the real decoder too.
 *
 * sysfs creates resourceN_resize only when a device is added, so the module
 * removes the function and rescans its bus on load (and again on unload,
 * which brings the device back without the capability).  After that the
 * kernel's real resize path runs: EBUSY while a driver is bound, EINVAL for
 * sizes not advertised, and a moved/resized BAR on success.
 * Do not remove the function's upstream bridge while the module is loaded:
 * the module keeps a pointer to its secondary bus.
 *
 * Parameters:
 *   addr   PCI address of the function, e.g. "0000:02:00.0"
 *   bar    index of the memory BAR to make resizable
 *   sizes  supported sizes, same encoding as resourceN_resize: bit n =
 *          2^n MiB, up to 2 GiB; must include the BAR's real size and
 *          nothing smaller (e.g. 0x1f8 = 8..256 MiB for an 8 MiB BAR)
 *
 * The BAR should be a 64-bit prefetchable one, like a GPU's VRAM BAR: the
 * kernel grows the upstream bridge window only for resources of the same
 * type as the window, and a root port's prefetchable window is 64-bit.
 */
#include <linux/bitops.h>
#include <linux/log2.h>
#include <linux/module.h>
#include <linux/pci.h>

#define REBAR_POS	0x100
#define REBAR_END	(REBAR_POS + PCI_REBAR_CTRL + 4)

static char *addr;
module_param(addr, charp, 0444);
MODULE_PARM_DESC(addr, "PCI address of the function, e.g. 0000:02:00.0");

static int bar = -1;
module_param(bar, int, 0444);
MODULE_PARM_DESC(bar, "memory BAR to make resizable");

static unsigned long sizes;
module_param(sizes, ulong, 0444);
MODULE_PARM_DESC(sizes, "supported sizes, bit n = 2^n MiB");

static struct pci_bus *target_bus;
static unsigned int target_devfn;
static struct pci_ops *orig_ops;
static struct pci_ops rebar_ops;

/* Current size, log2 of MiB.  Serialised by pci_lock like every config access. */
static u32 cur_size;

static bool is_target(struct pci_bus *bus, unsigned int devfn)
{
	return bus == target_bus && devfn == target_devfn;
}

static int bar_reg(void)
{
	return PCI_BASE_ADDRESS_0 + 4 * bar;
}

static u32 rebar_dword(int reg)
{
	switch (reg - REBAR_POS) {
	case 0:	/* header: ID, version 1, no next capability */
		return PCI_EXT_CAP_ID_REBAR | (1 << 16);
	case PCI_REBAR_CAP:
		return (sizes << 4) & PCI_REBAR_CAP_SIZES;
	default: /* PCI_REBAR_CTRL: one resizable BAR */
		return bar | (1 << PCI_REBAR_CTRL_NBAR_SHIFT) |
		       (cur_size << PCI_REBAR_CTRL_BAR_SHIFT);
	}
}

static int rebar_read(struct pci_bus *bus, unsigned int devfn, int where,
		      int size, u32 *val)
{
	int reg = where & ~3;
	u32 dword;
	int ret;

	if (!is_target(bus, devfn) ||
	    (reg != bar_reg() && (reg < REBAR_POS || reg >= REBAR_END)))
		return orig_ops->read(bus, devfn, where, size, val);

	if (reg == bar_reg()) {
		/* Address bits below the emulated size read as zero, the
		 * memory type flags (bits 3:0) stay as the device has them. */
		ret = orig_ops->read(bus, devfn, reg, 4, &dword);
		if (ret)
			return ret;
		dword = (dword & ~(u32)(((u64)SZ_1M << cur_size) - 1)) |
			(dword & ~PCI_BASE_ADDRESS_MEM_MASK);
	} else {
		dword = rebar_dword(reg);
	}

	dword >>= (where & 3) * 8;
	*val = size == 4 ? dword : dword & GENMASK(size * 8 - 1, 0);
	return PCIBIOS_SUCCESSFUL;
}

static int rebar_write(struct pci_bus *bus, unsigned int devfn, int where,
		       int size, u32 val)
{
	int reg = where & ~3, shift = (where & 3) * 8;
	u32 mask, ctrl;

	if (!is_target(bus, devfn) || reg < REBAR_POS || reg >= REBAR_END)
		return orig_ops->write(bus, devfn, where, size, val);

	/* Header and capability register are read-only; in the control
	 * register only the size field is writable. */
	if (reg == REBAR_POS + PCI_REBAR_CTRL) {
		mask = (size == 4 ? ~0u : GENMASK(size * 8 - 1, 0)) << shift;
		ctrl = (rebar_dword(reg) & ~mask) | ((val << shift) & mask);
		cur_size = (ctrl & PCI_REBAR_CTRL_BAR_SIZE) >>
			   PCI_REBAR_CTRL_BAR_SHIFT;
	}
	return PCIBIOS_SUCCESSFUL;
}

/* Remove the function and let a rescan add it again, so that sysfs
 * re-evaluates which resourceN_resize files the device has. */
static void readd_target(void)
{
	struct pci_dev *pdev;

	pci_lock_rescan_remove();
	pdev = pci_get_slot(target_bus, target_devfn);
	if (pdev) {
		pci_stop_and_remove_bus_device(pdev);
		pci_dev_put(pdev);
	}
	pci_rescan_bus(target_bus);
	pci_unlock_rescan_remove();
}

static int __init rebar_emu_init(void)
{
	unsigned int domain, busnr, slot, fn;
	struct pci_dev *pdev;
	resource_size_t len;
	u32 ext;
	int ret = 0;

	if (!addr || sscanf(addr, "%x:%x:%x.%x", &domain, &busnr, &slot, &fn) != 4) {
		pr_err("rebar_emu: addr=DDDD:BB:SS.F bar=N sizes=BITMAP are required\n");
		return -EINVAL;
	}
	/* Sizes stop at 2 GiB so only the low dword of a BAR needs masking. */
	if (bar < 0 || bar >= PCI_STD_NUM_BARS || !sizes || sizes & ~GENMASK(11, 0)) {
		pr_err("rebar_emu: bad bar=%d or sizes=%#lx\n", bar, sizes);
		return -EINVAL;
	}

	pdev = pci_get_domain_bus_and_slot(domain, busnr, PCI_DEVFN(slot, fn));
	if (!pdev) {
		pr_err("rebar_emu: no PCI device %s\n", addr);
		return -ENODEV;
	}

	len = pci_resource_len(pdev, bar);
	if (!pci_is_pcie(pdev) || !(pci_resource_flags(pdev, bar) & IORESOURCE_MEM) ||
	    len < SZ_1M || !is_power_of_2(len)) {
		pci_err(pdev, "rebar_emu: BAR %d is not a PCIe memory BAR >= 1 MiB\n", bar);
		ret = -EINVAL;
		goto out;
	}
	cur_size = ilog2(len) - 20;
	if (!(sizes & BIT(cur_size)) || (sizes & (BIT(cur_size) - 1))) {
		pci_err(pdev, "rebar_emu: sizes=%#lx must include the current size (bit %u) and nothing smaller\n",
			sizes, cur_size);
		ret = -EINVAL;
		goto out;
	}
	/* The capability takes 0x100 and ends the list: refuse devices that
	 * already have extended capabilities. */
	pci_read_config_dword(pdev, REBAR_POS, &ext);
	if (ext && ext != ~0u) {
		pci_err(pdev, "rebar_emu: config 0x100 is in use (%#x)\n", ext);
		ret = -EBUSY;
		goto out;
	}

	target_bus = pdev->bus;
	target_devfn = pdev->devfn;
	rebar_ops = *target_bus->ops;
	rebar_ops.read = rebar_read;
	rebar_ops.write = rebar_write;
	orig_ops = pci_bus_set_ops(target_bus, &rebar_ops);
out:
	pci_dev_put(pdev);
	if (ret)
		return ret;

	readd_target();
	pr_info("rebar_emu: %s BAR %d resizable, sizes %#lx, current %u MiB\n",
		addr, bar, sizes, 1u << cur_size);
	return 0;
}

static void __exit rebar_emu_exit(void)
{
	pci_bus_set_ops(target_bus, orig_ops);
	readd_target();
}

module_init(rebar_emu_init);
module_exit(rebar_emu_exit);
MODULE_DESCRIPTION("Test-guest-only Resizable BAR capability emulation");
MODULE_LICENSE("GPL");
